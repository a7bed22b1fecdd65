"""Sign-in, sessions and tokens, the `emps user` commands and the first admin `emps up` creates."""

from __future__ import annotations

import stat

import bcrypt
import psycopg
import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from emps import actions
from emps.cli import app as cli
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT
from emps.users import (
    SignInThrottled,
    UserError,
    UserRole,
    change_password,
    connect_operator,
    ensure_first_admin,
    session_user,
    sign_in,
    sign_out,
)

# Not imported from conftest: with tests/dbt collected in the same run, `conftest` may name
# another directory's module.
APP = PROJECT_ROOT / "src" / "emps" / "dashboard" / "streamlit_app.py"


def _audit_actions(username: str) -> list[str]:
    with connect(Role.OWNER) as conn:
        rows = conn.execute(
            "select action from ops.audit_log where target_id = %s order by id", (username,)
        )
        return [r[0] for r in rows]


def _owner(sql: str, *params) -> None:
    with connect(Role.OWNER, autocommit=True) as conn:
        conn.execute(sql, params)


def test_signed_out_visitor_sees_only_the_sign_in_form(fleet):
    """Without signing in, the dashboard shows the sign-in form and no fleet data."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["EMPS — sign in"]
    assert [w.label for w in at.text_input] == ["User name", "Password"]
    assert not at.dataframe and not at.metric


def test_sign_in_checks_the_password_and_is_audited(fleet):
    """The right password signs a user in with their role and a session; wrong ones fail; both
    are audited."""
    user = sign_in("tech", fleet.password)
    assert user is not None and user.role is UserRole.TECHNICIAN and user.token
    assert session_user(user.token).username == "tech"
    assert sign_in("tech", "not-the-password") is None
    assert sign_in("nobody", fleet.password) is None
    assert sign_in("<script>", fleet.password) is None
    signs = [a for a in _audit_actions("tech") if a.startswith("user.sign_in")]
    assert signs == ["user.sign_in", "user.sign_in_failed"]
    with connect(Role.OWNER) as conn:
        last = conn.execute("select last_sign_in_at from ops.users where username = 'tech'")
        assert last.fetchone()[0] is not None


def test_deactivated_user_cannot_sign_in_and_loses_their_session(fleet, signed_in_as):
    """An admin deactivating a user stops their sign-in and ends the session they hold."""
    viewer = signed_in_as("viewer")
    actions.save_user(signed_in_as("admin"), "viewer", "Viewer", active=False)
    assert sign_in("viewer", fleet.password) is None
    assert session_user(viewer.token) is None


def test_no_role_of_the_dashboard_can_read_password_hashes(fleet):
    """The reader lists users without their password verifiers or sessions; the operator can
    read no table, and no function returns what is stored for a password."""
    with connect(Role.READER) as conn:
        assert conn.execute("select count(*) from ops.users").fetchone()[0] == 3
        for query in (
            "select password_verifier from ops.users",
            "select password_salt from ops.users",
            "select * from ops.auth_tokens",
            "select * from ops.sign_in_attempts",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
            conn.rollback()
    with connect_operator() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from ops.users")
        functions = conn.execute(
            "select p.proname, pg_get_function_result(p.oid) from pg_proc p "
            "join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'ops' "
            "and has_function_privilege('emps_operator', p.oid, 'execute')"
        ).fetchall()
    assert functions, "the operator role must be able to call its functions"
    for name, result in functions:
        assert "password_verifier" not in result and "ops.users" not in result, name


def test_eleventh_wrong_password_in_a_minute_is_refused_without_a_bcrypt_check(fleet, monkeypatch):
    """Ten wrong passwords for a user in a minute are checked; the 11th is refused before any
    bcrypt work, as is the right password until the minute has passed."""
    hashed: list[bytes] = []
    real = bcrypt.hashpw

    def counting(password: bytes, salt: bytes) -> bytes:
        hashed.append(password)
        return real(password, salt)

    monkeypatch.setattr("emps.users.bcrypt.hashpw", counting)
    for attempt in range(10):
        assert sign_in("tech", f"wrong password {attempt}", client="10.0.0.1") is None
    assert len(hashed) == 10
    with pytest.raises(SignInThrottled, match="wait a minute"):
        sign_in("tech", "wrong password 10", client="10.0.0.2")
    with pytest.raises(SignInThrottled):
        sign_in("tech", fleet.password, client="10.0.0.3")
    assert len(hashed) == 10, "a throttled sign-in must not cost a bcrypt check"
    # Another user from another address is not held back by tech's attackers.
    assert sign_in("viewer", fleet.password, client="10.0.0.4") is not None
    # Once the minute has passed (the attempts aged here instead of waiting), tech signs in.
    _owner("update ops.sign_in_attempts set at = at - interval '61 seconds'")
    assert sign_in("tech", fleet.password, client="10.0.0.1") is not None


def test_one_client_guessing_many_names_is_throttled(fleet):
    """Ten wrong passwords from one client in a minute, whatever the user names, stop that
    client (not others) for the rest of the minute."""
    for attempt in range(10):
        assert sign_in(f"guess{attempt}", "some password 1", client="198.51.100.7") is None
    with pytest.raises(SignInThrottled):
        sign_in("admin", fleet.password, client="198.51.100.7")
    assert sign_in("admin", fleet.password, client="198.51.100.8") is not None


def test_a_session_ends_when_idle_signed_out_or_expired(fleet):
    """A session token works while used, and stops when idle longer than EMPS_SESSION_IDLE_S,
    when signed out, or past its absolute end (the clock is moved in the database, not slept)."""
    idle = sign_in("tech", fleet.password)
    assert session_user(idle.token).role is UserRole.TECHNICIAN
    _owner(
        "update ops.auth_tokens set last_used_at = now() - idle_timeout - interval '1 second' "
        "where token_sha256 = sha256(convert_to(%s, 'UTF8'))",
        idle.token,
    )
    assert session_user(idle.token) is None

    ended = sign_in("tech", fleet.password)
    sign_out(ended.token)
    assert session_user(ended.token) is None

    expired = sign_in("tech", fleet.password)
    _owner(
        "update ops.auth_tokens set expires_at = now() - interval '1 second' "
        "where token_sha256 = sha256(convert_to(%s, 'UTF8'))",
        expired.token,
    )
    assert session_user(expired.token) is None
    with pytest.raises(actions.ActionFailed, match="session has ended"):
        actions.acknowledge_alert(expired, fleet.critical_alert, "late")


def test_role_and_active_flag_are_read_again_on_every_page_load(fleet, signed_in_as):
    """An admin demoted while signed in loses the Admin page at the next page load, and a
    deactivated one is back at the sign-in form (the browser test does it with reloads)."""
    token = signed_in_as("admin").token

    def load() -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.session_state["session_token"] = token  # as the session cookie brings it
        at.run()
        assert not at.exception
        return at

    assert "pages/admin.py" in str(load()._registered_pages)
    _owner("update ops.users set role = 'Technician' where username = 'admin'")
    at = load()
    assert at.title[0].value == "Fleet overview"
    assert "pages/admin.py" not in str(at._registered_pages)
    _owner("update ops.users set active = false where username = 'admin'")
    assert [t.value for t in load().title] == ["EMPS — sign in"]


def test_a_password_set_by_someone_else_is_changed_at_the_next_sign_in(fleet, signed_in_as):
    """A password an admin sets for a user ends that user's sessions and is temporary: after
    signing in with it they see only the form to choose their own, and nothing can be done
    until they have."""
    tech_session = signed_in_as("tech")
    actions.save_user(signed_in_as("admin"), "tech", "Technician", password="temporary-pass-1")
    assert session_user(tech_session.token) is None
    tech = sign_in("tech", "temporary-pass-1")
    assert tech.must_change_password
    with pytest.raises(actions.ActionFailed, match="must choose a new password"):
        actions.acknowledge_alert(tech, fleet.critical_alert, "before changing")

    def load() -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.session_state["session_token"] = tech.token
        return at.run()

    at = load()
    assert [t.value for t in at.title] == ["Choose your password"]
    assert [w.label for w in at.text_input] == [
        "Current password",
        "New password",
        "New password again",
    ]
    assert not at.dataframe and not at.metric
    # What the form does (the browser test submits it).
    change_password(tech, "temporary-pass-1", "my-own-password-2")
    assert load().title[0].value == "Fleet overview"
    assert sign_in("tech", "temporary-pass-1") is None
    assert sign_in("tech", "my-own-password-2") is not None
    assert "user.password" in _audit_actions("tech")


def test_changing_a_password_needs_the_current_one(fleet, signed_in_as):
    """A wrong current password is refused (and counted like a wrong sign-in); the right one
    changes it and ends the user's other sessions."""
    tech, other = signed_in_as("tech"), signed_in_as("tech")
    with pytest.raises(UserError, match="current password is wrong"):
        change_password(tech, "not-the-password", "another-password-3")
    change_password(tech, fleet.password, "another-password-3")
    assert session_user(tech.token) is not None
    assert session_user(other.token) is None
    assert sign_in("tech", "another-password-3") is not None


def test_user_cli_add_list_passwd(fleet):
    """`emps user add` creates a user who can sign in; `passwd` changes the password."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["user", "add", "ops.lead", "--role", "technician", "--password", "first-password-1"]
    )
    assert result.exit_code == 0, result.output
    assert "added ops.lead as Technician" in result.output
    assert sign_in("ops.lead", "first-password-1").role is UserRole.TECHNICIAN
    result = runner.invoke(cli, ["user", "passwd", "ops.lead", "--password", "second-password-2"])
    assert result.exit_code == 0, result.output
    assert sign_in("ops.lead", "first-password-1") is None
    assert sign_in("ops.lead", "second-password-2") is not None
    result = runner.invoke(cli, ["user", "list"])
    assert "ops.lead" in result.output and "Technician" in result.output
    result = runner.invoke(cli, ["user", "add", "x", "--role", "boss", "--password", "p" * 12])
    assert result.exit_code == 1
    assert "user name 'x' must be 2-64" in result.output or "role" in result.output


def test_user_token_for_scripts_works_until_revoked(fleet):
    """`emps user token` prints a token once; it names the user to the database (as the HTTP API
    will use it) without idling out, and `emps user revoke` ends it."""
    runner = CliRunner()
    result = runner.invoke(cli, ["user", "token", "tech", "--label", "night report", "--days", "7"])
    assert result.exit_code == 0, result.output
    token = next(
        line.strip() for line in result.output.splitlines() if line.strip().startswith("emps_")
    )
    assert session_user(token).username == "tech"
    with connect(Role.OWNER) as conn:
        stored = conn.execute(
            "select kind, label, idle_timeout, expires_at - created_at from ops.auth_tokens"
        ).fetchall()
    assert [row[:3] for row in stored] == [("api", "night report", None)]
    assert stored[0][3].days == 7
    result = runner.invoke(cli, ["user", "tokens", "tech"])
    assert "night report" in result.output
    result = runner.invoke(cli, ["user", "revoke", "tech"])
    assert result.exit_code == 0, result.output
    assert session_user(token) is None


def test_short_password_is_refused(fleet):
    """`emps user add` refuses a password shorter than 10 characters, saying why."""
    result = CliRunner().invoke(cli, ["user", "add", "shorty", "--password", "short"])
    assert result.exit_code == 1
    assert "at least 10 characters" in result.output


@pytest.mark.parametrize("from_env", [True, False])
def test_first_admin(fleet, settings, from_env):
    """With no admin, `emps up` creates one from EMPS_ADMIN_PASSWORD, or generates a password
    into a file only its owner can read, which must be changed at the first sign-in; the file
    goes once it has been."""
    with connect(Role.OWNER, autocommit=True) as conn:
        conn.execute("delete from ops.users")
    secret = SecretStr("from-the-environment") if from_env else None
    first = ensure_first_admin(settings.replace(auth={"admin_password": secret}))
    assert first.username == "admin" and first.created
    if from_env:
        assert first.password_file is None
        admin = sign_in("admin", "from-the-environment")
        assert admin.role is UserRole.ADMIN and not admin.must_change_password
        assert ensure_first_admin(settings) is None  # an admin exists: nothing to say
        return
    path = first.password_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in first.note and "'admin'" in first.note
    text = path.read_text()
    assert "user name: admin" in text
    password = next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("password")
    )
    admin = sign_in("admin", password)
    assert admin.role is UserRole.ADMIN and admin.must_change_password
    again = ensure_first_admin(settings)  # not changed yet: the next start says where it is
    assert again is not None and again.password_file == path and not again.created
    change_password(admin, password, "the-admins-own-password")
    assert ensure_first_admin(settings) is None
    assert not path.exists()
