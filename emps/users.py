"""Dashboard users: roles, bcrypt password hashes, sign-in, and the first admin `emps up` creates.

Reads and checks of the password hash go through the narrow `emps_operator` role (migration 0060);
the dashboard's read-only role cannot see hashes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

import bcrypt
import psycopg

from emps.db import Role, _with_user, database_url
from emps.settings import Settings, get_settings

OPERATOR_ROLE = "emps_operator"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{1,63}$")
MIN_PASSWORD_LENGTH = 10
FIRST_ADMIN = "admin"
# bcrypt reads only the first 72 bytes; longer passwords would silently share a prefix.
MAX_PASSWORD_BYTES = 72
_DUMMY_HASH = "$2b$12$7Qoy6ig8TOvSsYx9qSH4T.dDrpGuxtNvrdiCOJf0tPrYJaESm7GcS"  # of a throwaway value


class UserRole(StrEnum):
    ADMIN = "Admin"
    TECHNICIAN = "Technician"
    VIEWER = "Viewer"

    @property
    def can_act(self) -> bool:
        """Acknowledge and resolve alerts, create, reschedule and complete tasks."""
        return self in (UserRole.ADMIN, UserRole.TECHNICIAN)

    @property
    def can_administer(self) -> bool:
        """Manage users and thresholds."""
        return self is UserRole.ADMIN


@dataclass(frozen=True)
class User:
    username: str
    role: UserRole
    display_name: str = ""

    @property
    def label(self) -> str:
        return f"{self.display_name or self.username} ({self.role.value})"


class UserError(ValueError):
    """A user-management request that cannot be done; the message says why."""


def operator_url(settings: Settings | None = None) -> str:
    """URL of the dashboard's write role: EMPS_OPERATOR_URL, or the reader's server as emps_operator."""
    settings = settings or get_settings()
    if settings.operator_url is not None:
        return settings.operator_url.get_secret_value()
    # Same server as the dashboard's reads; its password comes from PGPASSWORD / .pgpass.
    return _with_user(database_url(Role.READER, settings), OPERATOR_ROLE)


def connect_operator(settings: Settings | None = None) -> psycopg.Connection:
    return psycopg.connect(
        operator_url(settings), connect_timeout=10, application_name="emps-dashboard-operator"
    )


def validate_username(username: str) -> str:
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise UserError(
            f"user name {username!r} must be 2-64 characters: lower-case letters, digits, '_', "
            "'.', '@' or '-', starting with a letter or digit"
        )
    return username


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UserError(f"password must be at most {MAX_PASSWORD_BYTES} bytes long")


def hash_password(password: str) -> str:
    validate_password(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def parse_role(role: str) -> UserRole:
    for candidate in UserRole:
        if candidate.value.lower() == role.strip().lower():
            return candidate
    raise UserError(f"role {role!r} is not one of Admin, Technician, Viewer")


def authenticate(username: str, password: str, settings: Settings | None = None) -> User | None:
    """The user when the password matches an active account, else None; every attempt is audited."""
    try:
        username = validate_username(username)
    except UserError:
        return None
    with connect_operator(settings) as conn:
        row = conn.execute(
            "select username, role, display_name, password_hash, active "
            "from ops.user_credentials(%s)",
            (username,),
        ).fetchone()
        # Check a hash even for unknown users, so timing does not tell which names exist.
        stored = row[3] if row else _DUMMY_HASH
        matches = len(password.encode()) <= MAX_PASSWORD_BYTES and bcrypt.checkpw(
            password.encode(), stored.encode()
        )
        ok = bool(row and row[4] and matches)
        if row is not None:
            conn.execute("select ops.record_sign_in(%s, %s)", (username, ok))
    if not ok:
        return None
    return User(username=row[0], role=UserRole(row[1]), display_name=row[2])


# -- administration from the command line (owner connection: the CLI runs on the server) -----------
def add_user(
    conn: psycopg.Connection,
    username: str,
    role: str,
    password: str,
    display_name: str = "",
    actor: str = "cli",
) -> User:
    username = validate_username(username)
    user_role = parse_role(role)
    password_hash = hash_password(password)
    with conn.transaction():
        exists = conn.execute("select 1 from ops.users where username = %s", (username,)).fetchone()
        if exists:
            raise UserError(
                f"user {username!r} already exists; use `emps user passwd {username}` to change "
                "the password"
            )
        conn.execute(
            "insert into ops.users (username, role, display_name, password_hash) "
            "values (%s, %s, %s, %s)",
            (username, user_role.value, display_name, password_hash),
        )
        _audit(conn, actor, "user.create", username, {"role": user_role.value})
    return User(username, user_role, display_name)


def set_password(
    conn: psycopg.Connection, username: str, password: str, actor: str = "cli"
) -> None:
    username = validate_username(username)
    password_hash = hash_password(password)
    with conn.transaction():
        updated = conn.execute(
            "update ops.users set password_hash = %s, updated_at = now() where username = %s",
            (password_hash, username),
        ).rowcount
        if not updated:
            raise UserError(f"user {username!r} does not exist; add it with `emps user add`")
        _audit(conn, actor, "user.password", username, {})


def list_users(conn: psycopg.Connection) -> list[dict]:
    cur = conn.execute(
        "select username, role, display_name, active, created_at, last_sign_in_at "
        "from ops.users order by username"
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def ensure_first_admin(settings: Settings | None = None) -> str | None:
    """Create the `admin` user when no admin exists yet.

    Returns the generated password (to print once) when EMPS_ADMIN_PASSWORD is unset, else None.
    """
    from emps.db import connect

    settings = settings or get_settings()
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        if conn.execute("select 1 from ops.users where role = 'Admin' and active").fetchone():
            return None
        generated = None
        if settings.admin_password is not None:
            password = settings.admin_password.get_secret_value()
        else:
            password = generated = secrets.token_urlsafe(12)
        if conn.execute("select 1 from ops.users where username = %s", (FIRST_ADMIN,)).fetchone():
            with conn.transaction():
                conn.execute(
                    "update ops.users set role = 'Admin', active = true, password_hash = %s, "
                    "updated_at = now() where username = %s",
                    (hash_password(password), FIRST_ADMIN),
                )
                _audit(conn, "emps up", "user.restore_admin", FIRST_ADMIN, {})
        else:
            add_user(conn, FIRST_ADMIN, "Admin", password, "First administrator", actor="emps up")
    return generated


def _audit(conn: psycopg.Connection, actor: str, action: str, username: str, details: dict) -> None:
    from psycopg.types.json import Jsonb

    conn.execute(
        "insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details) "
        "values (%s, 'system', %s, 'user', %s, %s)",
        (actor, action, username, Jsonb(details)),
    )
