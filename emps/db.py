"""Where the database is and how to connect to it, as owner, writer (flows) or reader (dashboard)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psycopg

from emps.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from emps.embedded_pg import EmbeddedPostgres


# Fixed role names: migrations grant to them (production sets their passwords out of band).
WRITER_ROLE = "emps_writer"
READER_ROLE = "emps_reader"


class Role(StrEnum):
    OWNER = "owner"  # migrations
    WRITER = "writer"  # flows, simulator
    READER = "reader"  # dashboard reads


def embedded_server(settings: Settings | None = None) -> EmbeddedPostgres:
    settings = settings or get_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from emps.embedded_pg import EmbeddedPostgres

    return EmbeddedPostgres(settings.pg_dir / "data", host=settings.pg_host, port=settings.pg_port)


def database_url(role: Role = Role.OWNER, settings: Settings | None = None) -> str:
    """The connection URL for a role. Embedded: trust auth on loopback, no passwords."""
    settings = settings or get_settings()
    explicit = {
        Role.OWNER: settings.database_url,
        Role.WRITER: settings.writer_url or settings.database_url,
        Role.READER: settings.reader_url or settings.database_url,
    }[role]
    if explicit is not None and (role is Role.OWNER or _has_own_url(role, settings)):
        return explicit.get_secret_value()
    if explicit is not None:
        # Same server as the owner URL but logging in as the narrower role (password via PGPASSWORD
        # or .pgpass in production).
        user = WRITER_ROLE if role is Role.WRITER else READER_ROLE
        return _with_user(explicit.get_secret_value(), user)
    user = {Role.OWNER: "postgres", Role.WRITER: WRITER_ROLE, Role.READER: READER_ROLE}[role]
    return f"postgresql://{user}@{settings.pg_host}:{settings.pg_port}/{settings.pg_database}"


def _has_own_url(role: Role, settings: Settings) -> bool:
    return (settings.writer_url if role is Role.WRITER else settings.reader_url) is not None


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """A URL safe to print: the password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(
    role: Role = Role.WRITER, settings: Settings | None = None, **kwargs
) -> psycopg.Connection:
    """A new connection for `role`; the caller closes it (use it as a context manager)."""
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", f"emps-{role.value}")
    return psycopg.connect(database_url(role, settings), **kwargs)


@contextmanager
def transaction(
    role: Role = Role.WRITER, settings: Settings | None = None
) -> Iterator[psycopg.Connection]:
    """A connection whose work commits on success and rolls back on error."""
    with connect(role, settings) as conn, conn.transaction():
        yield conn


def ensure_database(settings: Settings | None = None) -> None:
    """Create the platform database on the embedded server when it does not exist yet."""
    settings = settings or get_settings()
    if not settings.embedded:
        return
    admin = embedded_server(settings).admin_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (settings.pg_database,)
        ).fetchone()
        if not exists:
            conn.execute(
                psycopg.sql.SQL("create database {}").format(
                    psycopg.sql.Identifier(settings.pg_database)
                )
            )
