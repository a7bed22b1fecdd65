"""The MLflow tracking server and UI in one process (what `emps up` runs as its `mlflow` service).

`mlflow server` starts its app in a second process (uvicorn) and waits for it: two Python
processes of ~250 MB each for one single-worker server. This runs MLflow's own app (the FastAPI
one `mlflow server` serves) in uvicorn inside this process, after the same store set-up:
the backend and registry in `tracking_uri`, new experiments' artifacts under `artifact_root`, no
artifact proxying (clients read and write the artifact root directly), job execution off.

Who may use it: every request but the health check needs the platform's MLflow credential
(HTTP basic, `emps secrets show`; the browser asks for it), and MLflow's own security middleware
only answers the host names in `allowed_hosts` (its `--allowed-hosts`) and cross-origin calls
from its own origins. MLflow's basic-auth app (per-user accounts in a second user database) is
not used: it is experimental, needs the `mlflow[auth]` extra, and its per-experiment permissions
would guard requests through this server only, while EMPS's trainer and scorer use the store
directly; what protects the models they load is the artifact hash recorded at promotion
(emps.ml.registry), and what protects this UI is this credential or the proxy's sign-in
(SECURITY.md).
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Sequence

from emps.credentials import basic_auth_header, load_secrets
from emps.ml.registry import artifact_root, tracking_uri
from emps.settings import Settings, get_settings

OPEN_PATHS = frozenset({"/health", "/version"})  # probes: no data, no actions
REALM = "EMPS MLflow"


class RequireCredential:
    """ASGI middleware: HTTP basic with one credential, or 401 (which makes a browser ask)."""

    def __init__(self, app, credential: str, open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.expected = basic_auth_header(credential).encode()
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b"MLflow needs the platform's credential (`emps secrets show`).\n",
            }
        )


def default_allowed_hosts(port: int) -> list[str]:
    """The names this server answers to on loopback (MLflow's --allowed-hosts)."""
    return [f"{host}:{port}" for host in ("127.0.0.1", "localhost")] + ["127.0.0.1", "localhost"]


def serve(
    host: str,
    port: int,
    settings: Settings | None = None,
    allowed_hosts: Sequence[str] | None = None,
    cors_origins: Sequence[str] | None = None,
) -> None:
    """Serve the tracking API and UI on host:port until interrupted."""
    settings = settings or get_settings()
    allowed_hosts = list(allowed_hosts or default_allowed_hosts(port))
    cors_origins = list(cors_origins or [f"http://{h}" for h in allowed_hosts if ":" in h])
    # Read by MLflow's security middleware when its app module is imported, below.
    os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = ",".join(allowed_hosts)
    os.environ["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(cors_origins)
    # uvicorn first: MLflow's server module installs its security middleware (allowed hosts and
    # origins) when it finds itself imported under uvicorn.
    import uvicorn
    from mlflow.environment_variables import (
        _MLFLOW_SERVER_BOOT_ID,
        _MLFLOW_SGI_NAME,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION,
    )
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )
    from mlflow.server.handlers import initialize_backend_stores

    store, artifacts = tracking_uri(settings), str(artifact_root(settings))
    # What `mlflow server` hands its uvicorn process; the app reads them when it starts.
    os.environ.update(
        {
            BACKEND_STORE_URI_ENV_VAR: store,
            REGISTRY_STORE_URI_ENV_VAR: store,
            ARTIFACT_ROOT_ENV_VAR: artifacts,
            _MLFLOW_SGI_NAME.name: "uvicorn",
            _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name: "false",
        }
    )
    initialize_backend_stores(store, store, artifacts)
    from mlflow.server.fastapi_app import app

    guarded = RequireCredential(app, load_secrets(settings).mlflow_auth)
    uvicorn.run(guarded, host=host, port=port, log_level="info", access_log=False)
