"""Where the database is and how to connect to it, as the owner (migrations) or one of the
narrow roles each part of the platform uses: ingest, transform (dbt), scoring, alerting, and the
dashboard's reader and operator. On the embedded server every role has a generated password
(emps.credentials); an external database takes one URL per role, or the owner's server with the
role's name and its password from PGPASSWORD / .pgpass."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.rows import RowFactory, TupleRow

from emps.credentials import SUPERUSER, load_secrets
from emps.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from emps.embedded_pg import EmbeddedPostgres


# Fixed role names: migrations grant to them (production sets their passwords out of band).
WRITER_ROLE = "emps_writer"
READER_ROLE = "emps_reader"
Row = TypeVar("Row")


class Role(StrEnum):
    OWNER = "owner"  # migrations, the CLI's administration
    WRITER = "writer"  # dbt: reads raw and ops, owns the analytics schema it builds
    READER = "reader"  # the dashboard's reads, metrics, model inputs
    OPERATOR = "operator"  # the dashboard's writes: session-checked, audited functions only
    INGEST = "ingest"  # the ingest flow, equipment import, the simulator
    SCORING = "scoring"  # predictions and the model's promotion history
    ALERTING = "alerting"  # alerts, maintenance tasks, notifications, retention
    API = "api"  # the HTTP API: device keys and its ingest requests, functions only


ROLE_NAMES = {
    Role.OWNER: "postgres",
    Role.WRITER: WRITER_ROLE,
    Role.READER: READER_ROLE,
    Role.OPERATOR: "emps_operator",
    Role.INGEST: "emps_ingest",
    Role.SCORING: "emps_scoring",
    Role.ALERTING: "emps_alerting",
    Role.API: "emps_api",
}
PREFECT_ROLE = "emps_prefect"
PREFECT_DATABASE = "prefect"


def embedded_server(settings: Settings | None = None) -> EmbeddedPostgres:
    settings = settings or get_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from emps.embedded_pg import EmbeddedPostgres

    return EmbeddedPostgres(
        settings.pg_dir / "data",
        host=settings.database.pg_host,
        port=settings.database.pg_port,
        superuser_password=load_secrets(settings).password(SUPERUSER),
    )


def _own_url(role: Role, settings: Settings):
    return {
        Role.OWNER: settings.database.url,
        Role.WRITER: settings.database.writer_url,
        Role.READER: settings.database.reader_url,
        Role.OPERATOR: settings.database.operator_url,
        Role.INGEST: settings.database.ingest_url,
        Role.SCORING: settings.database.scoring_url,
        Role.ALERTING: settings.database.alerting_url,
        Role.API: settings.database.api_url,
    }[role]


def database_url(role: Role = Role.OWNER, settings: Settings | None = None) -> str:
    """The connection URL for a role. Embedded: its generated password in the URL."""
    settings = settings or get_settings()
    own = _own_url(role, settings)
    if own is not None:
        return own.get_secret_value()
    if settings.database.url is not None:
        # Same server as the owner URL but logging in as the narrower role (password via PGPASSWORD
        # or .pgpass in production).
        return _with_user(settings.database.url.get_secret_value(), ROLE_NAMES[role])
    return _embedded_url(ROLE_NAMES[role], settings.database.pg_database, settings)


def _embedded_url(user: str, database: str, settings: Settings) -> str:
    password = quote(load_secrets(settings).password(user), safe="")
    return f"postgresql://{user}:{password}@{settings.database.pg_host}:{settings.database.pg_port}/{database}"


def prefect_database_url(settings: Settings | None = None) -> str:
    """Prefect's own database on the embedded server, as its own role (never the superuser)."""
    settings = settings or get_settings()
    url = _embedded_url(PREFECT_ROLE, PREFECT_DATABASE, settings)
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


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


@overload
def connect(
    role: Role = ...,
    settings: Settings | None = ...,
    *,
    row_factory: RowFactory[Row],
    **kwargs: Any,
) -> psycopg.Connection[Row]: ...
@overload
def connect(
    role: Role = ..., settings: Settings | None = ..., **kwargs: Any
) -> psycopg.Connection[TupleRow]: ...
def connect(
    role: Role = Role.READER, settings: Settings | None = None, **kwargs: Any
) -> psycopg.Connection[Any]:
    """A new connection for `role`; the caller closes it (use it as a context manager). Rows are
    tuples, or what `row_factory` makes of them (psycopg.rows.dict_row: dicts by column)."""
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", f"emps-{role.value}")
    return psycopg.connect(database_url(role, settings), **kwargs)


def one(cursor: psycopg.Cursor[Row]) -> Row:
    """The row of a query that always returns one: an aggregate, a function's result, an
    upsert's `returning`."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row where one was expected")
    return row


@contextmanager
def transaction(
    role: Role = Role.READER, settings: Settings | None = None
) -> Iterator[psycopg.Connection]:
    """A connection whose work commits on success and rolls back on error."""
    with connect(role, settings) as conn, conn.transaction():
        yield conn


def ensure_database(settings: Settings | None = None) -> None:
    """On the embedded server: the platform database, and every login role with the password in
    the secrets file (created when missing; set again at each call, so a rotation or an upgrade
    from password-less roles takes effect)."""
    settings = settings or get_settings()
    if not settings.database.embedded:
        return
    admin = embedded_server(settings).admin_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        set_role_passwords(conn, settings)
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (settings.database.pg_database,)
        ).fetchone()
        if not exists:
            conn.execute(
                psycopg.sql.SQL("create database {}").format(
                    psycopg.sql.Identifier(settings.database.pg_database)
                )
            )


def set_role_passwords(
    conn: psycopg.Connection, settings: Settings | None = None, secrets=None
) -> list[str]:
    """Create the secrets file's login roles that do not exist yet and give every one its
    password (sent as a SCRAM verifier computed here, never in clear); returns the roles set.
    `secrets`: other values than the file's (a rotation about to be written)."""
    from psycopg import sql

    secrets = secrets or load_secrets(settings)
    done = []
    for role, password in secrets.database.items():
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))
        verifier = conn.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("alter role {} login password {}").format(
                sql.Identifier(role), sql.Literal(verifier)
            )
        )
        done.append(role)
    return done


def ensure_prefect_database(settings: Settings | None = None) -> None:
    """Prefect's database on the embedded server, owned by its own role. A database an older
    release created as the superuser's is handed over, with everything in it."""
    settings = settings or get_settings()
    server = embedded_server(settings)
    with psycopg.connect(server.admin_url("postgres"), autocommit=True) as conn:
        set_role_passwords(conn, settings)
        owner = conn.execute(
            "select pg_get_userbyid(datdba) from pg_database where datname = %s",
            (PREFECT_DATABASE,),
        ).fetchone()
        if owner is None:
            conn.execute(f"create database {PREFECT_DATABASE} owner {PREFECT_ROLE}")
        elif owner[0] != PREFECT_ROLE:
            conn.execute(f"alter database {PREFECT_DATABASE} owner to {PREFECT_ROLE}")
        conn.execute(f"revoke all on database {PREFECT_DATABASE} from public")
    if owner is not None and owner[0] != PREFECT_ROLE:
        with psycopg.connect(server.admin_url(PREFECT_DATABASE), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL(HAND_OVER_OBJECTS).format(role=psycopg.sql.Literal(PREFECT_ROLE))
            )


# Tables, views, sequences, types and functions an older release's Prefect created as the
# superuser (REASSIGN OWNED cannot move the superuser's objects: some belong to the system).
HAND_OVER_OBJECTS = """
do $$
declare
    target text := {role};
    item record;
begin
    for item in
        select format('alter %s %I.%I owner to %I',
                      case c.relkind when 'S' then 'sequence' when 'v' then 'view'
                                     when 'm' then 'materialized view' else 'table' end,
                      n.nspname, c.relname, target) as statement
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S')
          and pg_get_userbyid(c.relowner) <> target
          and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype in ('a', 'i'))
        union all
        select format('alter type %I.%I owner to %I', n.nspname, t.typname, target)
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where n.nspname = 'public' and t.typtype in ('e', 'd', 'c') and pg_get_userbyid(t.typowner) <> target
          and (t.typtype <> 'c' or exists (select 1 from pg_class c where c.oid = t.typrelid and c.relkind = 'c'))
        union all
        select format('alter function %s owner to %I', p.oid::regprocedure, target)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and pg_get_userbyid(p.proowner) <> target
          and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
    loop
        execute item.statement;
    end loop;
end
$$
"""
