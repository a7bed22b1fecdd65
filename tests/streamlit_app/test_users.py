"""Sign-in, the `emps user` commands and the first admin `emps up` creates."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from emps.cli import app as cli
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT
from emps.users import UserRole, authenticate, ensure_first_admin

# Not imported from conftest: with tests/dbt collected in the same run, `conftest` may name
# another directory's module.
APP = PROJECT_ROOT / "streamlit_app" / "streamlit_app.py"


def _audit_actions(username: str) -> list[str]:
    with connect(Role.OWNER) as conn:
        rows = conn.execute(
            "select action from ops.audit_log where target_id = %s order by id", (username,)
        )
        return [r[0] for r in rows]


def test_signed_out_visitor_sees_only_the_sign_in_form(fleet):
    """Without signing in, the dashboard shows the sign-in form and no fleet data."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["EMPS — sign in"]
    assert [w.label for w in at.text_input] == ["User name", "Password"]
    assert not at.dataframe and not at.metric


def test_sign_in_checks_the_password_and_is_audited(fleet):
    """The right password signs a user in with their role; wrong ones fail; both are audited."""
    user = authenticate("tech", fleet.password)
    assert user is not None and user.role is UserRole.TECHNICIAN
    assert authenticate("tech", "not-the-password") is None
    assert authenticate("nobody", fleet.password) is None
    assert authenticate("<script>", fleet.password) is None
    assert _audit_actions("tech") == ["user.sign_in", "user.sign_in_failed"]
    with connect(Role.OWNER) as conn:
        last = conn.execute("select last_sign_in_at from ops.users where username = 'tech'")
        assert last.fetchone()[0] is not None


def test_deactivated_user_cannot_sign_in(fleet):
    """An admin deactivating a user stops their sign-in."""
    from emps import actions
    from emps.users import User

    actions.save_user(User("admin", UserRole.ADMIN), "viewer", "Viewer", active=False)
    assert authenticate("viewer", fleet.password) is None


def test_reader_role_cannot_see_password_hashes(fleet):
    """The dashboard's read-only role lists users but cannot read their password hashes."""
    import psycopg

    with connect(Role.READER) as conn:
        assert conn.execute("select count(*) from ops.users").fetchone()[0] == 3
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select password_hash from ops.users")


def test_user_cli_add_list_passwd(fleet):
    """`emps user add` creates a user who can sign in; `passwd` changes the password."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["user", "add", "ops.lead", "--role", "technician", "--password", "first-password-1"]
    )
    assert result.exit_code == 0, result.output
    assert "added ops.lead as Technician" in result.output
    assert authenticate("ops.lead", "first-password-1").role is UserRole.TECHNICIAN
    result = runner.invoke(cli, ["user", "passwd", "ops.lead", "--password", "second-password-2"])
    assert result.exit_code == 0, result.output
    assert authenticate("ops.lead", "first-password-1") is None
    assert authenticate("ops.lead", "second-password-2") is not None
    result = runner.invoke(cli, ["user", "list"])
    assert "ops.lead" in result.output and "Technician" in result.output
    result = runner.invoke(cli, ["user", "add", "x", "--role", "boss", "--password", "p" * 12])
    assert result.exit_code == 1
    assert "user name 'x' must be 2-64" in result.output or "role" in result.output


def test_short_password_is_refused(fleet):
    """`emps user add` refuses a password shorter than 10 characters, saying why."""
    result = CliRunner().invoke(cli, ["user", "add", "shorty", "--password", "short"])
    assert result.exit_code == 1
    assert "at least 10 characters" in result.output


@pytest.mark.parametrize("from_env", [True, False])
def test_first_admin(fleet, settings, from_env):
    """With no admin, `emps up` creates one from EMPS_ADMIN_PASSWORD or prints a generated one."""
    with connect(Role.OWNER, autocommit=True) as conn:
        conn.execute("delete from ops.users")
    secret = SecretStr("from-the-environment") if from_env else None
    update = {"admin_password": secret}
    generated = ensure_first_admin(settings.model_copy(update=update))
    if from_env:
        assert generated is None
        password = "from-the-environment"
    else:
        assert generated is not None and len(generated) >= 12
        password = generated
    assert authenticate("admin", password).role is UserRole.ADMIN
    assert ensure_first_admin(settings) is None  # an admin exists: nothing printed again
