"""The platform's generated secrets, kept in one file only its owner can read.

`emps up` on the embedded PostgreSQL needs passwords for every database role, a credential for the
Prefect API and one for the MLflow UI. They are generated on first use, written to
`<home>/secrets.json` (EMPS_SECRETS_PATH) with mode 0600 (never to git, never to a log), read by
every process of the platform, and replaced by `emps secrets rotate`. Production sets its own
(SECURITY.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from emps.settings import Settings, get_settings

SECRETS_FILE = "secrets.json"
# Every login role of the embedded server: the superuser (migrations), one per stage of the
# pipeline, the dashboard's two, and Prefect's own database role.
SUPERUSER = "postgres"
DATABASE_ROLES = (
    SUPERUSER,
    "emps_writer",
    "emps_reader",
    "emps_operator",
    "emps_ingest",
    "emps_scoring",
    "emps_alerting",
    "emps_api",
    "emps_prefect",
)
PREFECT_USER = "emps"
MLFLOW_USER = "emps"


class SecretsError(RuntimeError):
    """The secrets file cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class PlatformSecrets:
    """Role passwords and the two service credentials ("user:password")."""

    database: dict[str, str] = field(default_factory=dict)
    prefect_auth: str = ""
    mlflow_auth: str = ""

    def password(self, role: str) -> str:
        try:
            return self.database[role]
        except KeyError:
            raise SecretsError(
                f"no password for database role {role!r} in the secrets file"
            ) from None

    def to_json(self) -> dict:
        return {
            "database": dict(sorted(self.database.items())),
            "prefect_auth": self.prefect_auth,
            "mlflow_auth": self.mlflow_auth,
        }


def secrets_path(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.secrets_path or settings.home / SECRETS_FILE


def new_password() -> str:
    """32 random bytes, URL-safe (they go into connection URLs unescaped)."""
    return secrets.token_urlsafe(32)


def _complete(found: PlatformSecrets) -> PlatformSecrets:
    """Fill in what is missing (a first start, or a release that added a role)."""
    database = {role: found.database.get(role) or new_password() for role in DATABASE_ROLES}
    database.update({k: v for k, v in found.database.items() if k not in database})
    return PlatformSecrets(
        database=database,
        prefect_auth=found.prefect_auth or f"{PREFECT_USER}:{new_password()}",
        mlflow_auth=found.mlflow_auth or f"{MLFLOW_USER}:{new_password()}",
    )


def _require_private(path: Path, mode: int) -> None:
    mode = stat.S_IMODE(mode)
    if mode & 0o077:
        raise SecretsError(
            f"{path} can be read by other users (mode {mode:o}); make it private with "
            f"`chmod 600 {path}` and consider `emps secrets rotate`"
        )


def _read(path: Path) -> PlatformSecrets:
    try:
        data = json.loads(path.read_text())
        return PlatformSecrets(
            database={str(k): str(v) for k, v in data.get("database", {}).items()},
            prefect_auth=str(data.get("prefect_auth") or ""),
            mlflow_auth=str(data.get("mlflow_auth") or ""),
        )
    except (ValueError, AttributeError) as exc:
        raise SecretsError(
            f"{path} is not a valid secrets file ({exc}): restore it from a backup; or, to "
            "start over with new passwords, move it away, remove <home>/pg/data/pg_hba.conf "
            "and start again (the next start gives every role a new password)"
        ) from None


def write_secrets(found: PlatformSecrets, path: Path) -> None:
    """Replace the file atomically; it is created 0600, so it is never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(found.to_json(), handle, indent=2)
        handle.write("\n")
    tmp.replace(path)


def _create(found: PlatformSecrets, path: Path) -> bool:
    """Create the file only if none exists (two first starts racing keep one set); False when
    another process's file is already there."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_secrets(found, tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


_cache: dict[Path, tuple[float, PlatformSecrets]] = {}


def load_secrets(settings: Settings | None = None) -> PlatformSecrets:
    """The home's secrets, generated (and written 0600) on first use."""
    path = secrets_path(settings)
    try:
        found_stat = path.stat()
    except FileNotFoundError:
        mtime = None
    else:
        _require_private(path, found_stat.st_mode)
        mtime = found_stat.st_mtime
    if mtime is not None and (cached := _cache.get(path)) and cached[0] == mtime:
        return cached[1]
    found = _read(path) if mtime is not None else PlatformSecrets()
    complete = _complete(found)
    if mtime is None and not _create(complete, path):
        return load_secrets(settings)  # another process created it first: use its values
    if mtime is not None and complete != found:
        write_secrets(complete, path)
    mtime = path.stat().st_mtime
    _cache[path] = (mtime, complete)
    return complete


def rotated(current: PlatformSecrets, parts: set[str]) -> PlatformSecrets:
    """New values for `parts` ("database", "prefect", "mlflow"); the rest kept."""
    result = current
    if "database" in parts:
        result = replace(result, database={role: new_password() for role in current.database})
    if "prefect" in parts:
        result = replace(result, prefect_auth=f"{PREFECT_USER}:{new_password()}")
    if "mlflow" in parts:
        result = replace(result, mlflow_auth=f"{MLFLOW_USER}:{new_password()}")
    return result


def basic_auth_header(credential: str) -> str:
    """The HTTP Authorization header value for a "user:password" credential."""
    return "Basic " + base64.b64encode(credential.encode()).decode()


def forget_cached() -> None:
    """Read the file again at the next use (after a rotation in this process)."""
    _cache.clear()
