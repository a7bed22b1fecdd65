"""Dashboard users: roles, sign-in, sessions and tokens, and the first admin `emps up` creates.

The database checks passwords and keeps sessions (migration 0101); this module is its client. A
sign-in asks for the user's bcrypt salt, hashes the typed password with it here (the embedded
PostgreSQL has no bcrypt), and sends that; the database compares it with what it stores and, on a
match, records the SHA-256 of a new random session token. Only the token comes back: no function
returns a password hash. Every later call names the token, and the database re-reads the user's
role and active flag each time, so a demotion or deactivation applies at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from emps.db import Role, connect, database_url, one
from emps.settings import Settings, get_settings

OPERATOR_ROLE = "emps_operator"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.@-]{1,63}$")
MIN_PASSWORD_LENGTH = 10
FIRST_ADMIN = "admin"
FIRST_ADMIN_FILE = "first-admin.txt"
# bcrypt reads only the first 72 bytes; longer passwords would silently share a prefix.
MAX_PASSWORD_BYTES = 72
BCRYPT_ROUNDS = 12
API_TOKEN_PREFIX = "emps_"


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
    """A signed-in user as the database sees them now; `token` is their session's."""

    username: str
    role: UserRole
    display_name: str = ""
    token: str | None = field(default=None, repr=False, compare=False)
    must_change_password: bool = False

    @property
    def label(self) -> str:
        return f"{self.display_name or self.username} ({self.role.value})"


class UserError(ValueError):
    """A user-management request that cannot be done; the message says why."""


class SignInThrottled(UserError):
    """Too many wrong passwords in the last minute for this user or from this client."""


@dataclass(frozen=True)
class FirstAdmin:
    """What `emps up` tells about the first admin right after creating (or recalling) them."""

    username: str
    password_file: Path | None  # None: the password came from EMPS_ADMIN_PASSWORD
    created: bool

    @property
    def note(self) -> str:
        if self.password_file is None:
            return f"first admin '{self.username}' created with the password in EMPS_ADMIN_PASSWORD"
        verb = "created" if self.created else "has not chosen a password yet"
        return (
            f"first admin '{self.username}' {verb}: the password is in {self.password_file} "
            "(readable by you only). Sign in to the dashboard with it and choose your own; "
            "the file is removed at the next start after that."
        )


def operator_url(settings: Settings | None = None) -> str:
    """URL of the dashboard's write role (EMPS_OPERATOR_URL, or emps_operator on the database)."""
    return database_url(Role.OPERATOR, settings)


def connect_operator(settings: Settings | None = None) -> psycopg.Connection:
    return psycopg.connect(
        operator_url(settings),
        connect_timeout=10,
        application_name="emps-dashboard-operator",
        autocommit=True,
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


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """A new bcrypt string for a password (validated first)."""
    validate_password(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_role(role: str) -> UserRole:
    for candidate in UserRole:
        if candidate.value.lower() == role.strip().lower():
            return candidate
    raise UserError(f"role {role!r} is not one of Admin, Technician, Viewer")


def _bcrypt_with(password: str, salt: str) -> str:
    """The password hashed with a stored salt; '' for one bcrypt cannot take (never matches)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return ""
    return bcrypt.hashpw(password.encode(), salt.encode()).decode()


def _salt(conn: psycopg.Connection, username: str, client: str) -> str:
    try:
        return one(conn.execute("select ops.sign_in_salt(%s, %s)", (username, client)))[0]
    except psycopg.errors.ConfigurationLimitExceeded as exc:
        raise SignInThrottled(exc.diag.message_primary or str(exc)) from None


def _user(row) -> User:
    username, role, display_name, must_change = row[:4]
    return User(username, UserRole(role), display_name, must_change_password=must_change)


def sign_in(
    username: str, password: str, client: str = "", settings: Settings | None = None
) -> User | None:
    """The user, holding a new session token, when the password matches an active account;
    None when it does not. Raises SignInThrottled after 10 wrong passwords in a minute for this
    user name or from this client (no bcrypt work is done then)."""
    settings = settings or get_settings()
    try:
        username = validate_username(username)
    except UserError:
        return None
    token = secrets.token_urlsafe(32)
    with connect_operator(settings) as conn:
        salt = _salt(conn, username, client)
        try:
            row = conn.execute(
                "select * from ops.sign_in(%s, %s, %s, %s, %s, %s)",
                (
                    username,
                    _bcrypt_with(password, salt),
                    client,
                    token_hash(token),
                    settings.auth.session_idle_s,
                    settings.auth.session_max_s,
                ),
            ).fetchone()
        except psycopg.errors.ConfigurationLimitExceeded as exc:
            raise SignInThrottled(exc.diag.message_primary or str(exc)) from None
    if row is None:
        return None
    user = _user(row)
    return User(user.username, user.role, user.display_name, token, user.must_change_password)


def session_user(token: str | None, settings: Settings | None = None) -> User | None:
    """Who holds this session or API token now (role and active flag read afresh), or None when
    it is unknown, signed out, revoked, expired or idle too long. Each call counts as activity."""
    if not token:
        return None
    with connect_operator(settings) as conn:
        row = conn.execute("select * from ops.token_user(%s)", (token,)).fetchone()
    if row is None:
        return None
    user = _user(row)
    return User(user.username, user.role, user.display_name, token, user.must_change_password)


def sign_out(token: str | None, settings: Settings | None = None) -> None:
    if token:
        with connect_operator(settings) as conn:
            conn.execute("select ops.sign_out(%s)", (token,))


def change_password(
    user: User, current: str, new: str, client: str = "", settings: Settings | None = None
) -> None:
    """The signed-in user's own new password; raises UserError saying what is wrong. Their other
    sessions end."""
    if current == new:
        raise UserError("the new password must differ from the current one")
    new_hash = hash_password(new)
    with connect_operator(settings) as conn:
        salt = _salt(conn, user.username, client)
        try:
            changed = one(
                conn.execute(
                    "select ops.change_password(%s, %s, %s, %s)",
                    (user.token, _bcrypt_with(current, salt), new_hash, client),
                )
            )[0]
        except psycopg.errors.InsufficientPrivilege as exc:
            raise UserError(exc.diag.message_primary or str(exc)) from None
        except psycopg.errors.ConfigurationLimitExceeded as exc:
            raise SignInThrottled(exc.diag.message_primary or str(exc)) from None
    if not changed:
        raise UserError("the current password is wrong")


# -- administration from the command line (owner connection: the CLI runs on the server) -----------
_STORE_PASSWORD = (
    "password_salt = left(%(hash)s, 29), password_verifier = sha256(convert_to(%(hash)s, 'UTF8')), "
    "password_changed_at = now(), must_change_password = %(must_change)s"
)


def add_user(
    conn: psycopg.Connection,
    username: str,
    role: str,
    password: str,
    display_name: str = "",
    actor: str = "cli",
    must_change_password: bool = False,
    rounds: int = BCRYPT_ROUNDS,
) -> User:
    username = validate_username(username)
    user_role = parse_role(role)
    values = {
        "username": username,
        "role": user_role.value,
        "display_name": display_name,
        "hash": hash_password(password, rounds),
        "must_change": must_change_password,
    }
    with conn.transaction():
        exists = conn.execute("select 1 from ops.users where username = %s", (username,)).fetchone()
        if exists:
            raise UserError(
                f"user {username!r} already exists; use `emps user passwd {username}` to change "
                "the password"
            )
        conn.execute(
            "insert into ops.users (username, role, display_name, password_salt, "
            "password_verifier, password_changed_at, must_change_password) values (%(username)s, "
            "%(role)s, %(display_name)s, left(%(hash)s, 29), sha256(convert_to(%(hash)s, 'UTF8')), "
            "now(), %(must_change)s)",
            values,
        )
        _audit(conn, actor, "user.create", username, {"role": user_role.value})
    return User(username, user_role, display_name, must_change_password=must_change_password)


def set_password(
    conn: psycopg.Connection,
    username: str,
    password: str,
    actor: str = "cli",
    must_change_password: bool = False,
) -> None:
    """Set a password; the user's dashboard sessions end (their API tokens stay)."""
    username = validate_username(username)
    values = {
        "hash": hash_password(password),
        "must_change": must_change_password,
        "username": username,
    }
    with conn.transaction():
        updated = conn.execute(
            f"update ops.users set {_STORE_PASSWORD}, updated_at = now() "  # noqa: S608 - constant
            "where username = %(username)s",
            values,
        ).rowcount
        if not updated:
            raise UserError(f"user {username!r} does not exist; add it with `emps user add`")
        _revoke(conn, username, kind="session", reason=f"password set by {actor}")
        _audit(conn, actor, "user.password", username, {})


def list_users(conn: psycopg.Connection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row).execute(
        "select username, role, display_name, active, must_change_password, created_at, "
        "last_sign_in_at from ops.users order by username"
    )
    return cur.fetchall()


def mint_token(
    conn: psycopg.Connection, username: str, label: str, days: int, actor: str = "cli"
) -> tuple[str, int, object]:
    """A new API token for a user (scripts, the HTTP API): (token, its id, its expiry). The token
    is shown once; the database keeps its SHA-256 only."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            token_id, expires_at = one(
                conn.execute(
                    "select * from ops.mint_api_token(%s, %s, %s, %s, %s)",
                    (validate_username(username), token_hash(token), label, days, actor),
                )
            )
    except (psycopg.errors.NoDataFound, psycopg.errors.CheckViolation) as exc:
        raise UserError(exc.diag.message_primary or str(exc)) from None
    return token, token_id, expires_at


def list_tokens(conn: psycopg.Connection, username: str | None = None) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row).execute(
        "select t.id, u.username, t.kind, t.label, t.client, t.created_at, t.last_used_at, "
        "t.expires_at, t.revoked_at, t.revoked_reason from ops.auth_tokens t "
        "join ops.users u on u.id = t.user_id "
        "where (%(u)s::text is null or u.username = %(u)s) "
        "and (t.revoked_at is null and t.expires_at > now()) order by t.id",
        {"u": username},
    )
    return cur.fetchall()


def revoke_tokens(
    conn: psycopg.Connection, username: str, token_id: int | None = None, actor: str = "cli"
) -> int:
    """End a user's sessions and tokens (or one token); returns how many."""
    username = validate_username(username)
    with conn.transaction():
        count = _revoke(conn, username, token_id=token_id, reason=f"revoked by {actor}")
        _audit(conn, actor, "user.revoke_tokens", username, {"revoked": count, "id": token_id})
    return count


def _revoke(
    conn: psycopg.Connection,
    username: str,
    token_id: int | None = None,
    kind: str | None = None,
    reason: str = "revoked",
) -> int:
    return conn.execute(
        "update ops.auth_tokens t set revoked_at = now(), revoked_reason = %(reason)s "
        "from ops.users u where u.id = t.user_id and u.username = %(u)s "
        "and t.revoked_at is null and (%(id)s::bigint is null or t.id = %(id)s) "
        "and (%(kind)s::text is null or t.kind = %(kind)s)",
        {"u": username, "id": token_id, "kind": kind, "reason": reason},
    ).rowcount


def first_admin_file(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.home / FIRST_ADMIN_FILE


def ensure_first_admin(settings: Settings | None = None) -> FirstAdmin | None:
    """Create the `admin` user when no active admin exists yet.

    With EMPS_ADMIN_PASSWORD unset the password is generated, written to <home>/first-admin.txt
    (0600) and must be changed at the first sign-in. While that change is pending each start
    says where the file is; once it is done the file is removed. None when there is nothing to
    say.
    """
    settings = settings or get_settings()
    path = first_admin_file(settings)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        admin = conn.execute(
            "select username, must_change_password from ops.users "
            "where role = 'Admin' and active order by must_change_password, id limit 1"
        ).fetchone()
        if admin is not None:
            if admin[1] and path.exists():
                return FirstAdmin(admin[0], path, created=False)
            path.unlink(missing_ok=True)
            return None
        configured = settings.auth.admin_password
        generated = configured is None
        if configured is None:
            password = secrets.token_urlsafe(12)
            _write_private(path, _first_admin_text(password, settings))
        else:
            password = configured.get_secret_value()
        if conn.execute("select 1 from ops.users where username = %s", (FIRST_ADMIN,)).fetchone():
            with conn.transaction():
                conn.execute(
                    f"update ops.users set role = 'Admin', active = true, {_STORE_PASSWORD}, "  # noqa: S608
                    "updated_at = now() where username = %(username)s",
                    {
                        "hash": hash_password(password),
                        "must_change": generated,
                        "username": FIRST_ADMIN,
                    },
                )
                _audit(conn, "emps up", "user.restore_admin", FIRST_ADMIN, {})
        else:
            add_user(
                conn,
                FIRST_ADMIN,
                "Admin",
                password,
                "First administrator",
                actor="emps up",
                must_change_password=generated,
            )
    return FirstAdmin(FIRST_ADMIN, path if generated else None, created=True)


def _first_admin_text(password: str, settings: Settings) -> str:
    url = (
        settings.dashboard.base_url
        if "base_url" in settings.dashboard.model_fields_set
        else f"http://127.0.0.1:{settings.services.streamlit_port}"
    )
    return (
        "EMPS dashboard: the first administrator\n"
        f"user name: {FIRST_ADMIN}\n"
        f"password:  {password}\n"
        f"Sign in at {url}; you will be asked to choose your own password.\n"
        "`emps up` removes this file at its next start once you have.\n"
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _audit(conn: psycopg.Connection, actor: str, action: str, username: str, details: dict) -> None:
    conn.execute(
        "insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details) "
        "values (%s, 'system', %s, 'user', %s, %s)",
        (actor, action, username, Jsonb(details)),
    )
