"""The MLflow tracking server and UI in one process (what `emps up` runs as its `mlflow` service).

`mlflow server` starts its app in a second process (uvicorn) and waits for it: two Python
processes of ~250 MB each for one single-worker server. This runs MLflow's own app (the FastAPI
one `mlflow server` serves) in uvicorn inside this process, after the same store set-up:
the backend and registry in `tracking_uri`, new experiments' artifacts under `artifact_root`, no
artifact proxying (clients read and write the artifact root directly), job execution off.
"""

from __future__ import annotations

import os
import uuid

from emps.settings import Settings, get_settings
from ml.registry import artifact_root, tracking_uri


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve the tracking API and UI on host:port until interrupted."""
    # uvicorn first: MLflow's server module installs its security middleware (localhost-only
    # hosts and origins) when it finds itself imported under uvicorn.
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

    settings = settings or get_settings()
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

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
