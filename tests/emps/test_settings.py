"""Settings: documented in .env.example, secrets never shown."""

from __future__ import annotations

from typer.testing import CliRunner

from emps.cli import app
from emps.commands.config import env_example
from emps.settings import PROJECT_ROOT, Settings


def test_env_example_documents_every_setting():
    """.env.example lists every EMPS_* variable with its default (regenerate with
    `emps config example > .env.example`)."""
    committed = (PROJECT_ROOT / ".env.example").read_text()
    assert committed == env_example()
    for name in Settings.model_fields:
        assert f"EMPS_{name.upper()}=" in committed


def test_config_show_masks_secrets(monkeypatch, settings):
    """`emps config show` prints the SMTP password as *** and never its value."""
    from emps.settings import get_settings

    monkeypatch.setenv("EMPS_SMTP_PASSWORD", "hunter2-very-secret")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["config", "show"], env={"COLUMNS": "200"})
    finally:
        monkeypatch.delenv("EMPS_SMTP_PASSWORD")
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "hunter2-very-secret" not in result.output
    assert "EMPS_SMTP_PASSWORD" in result.output


def test_unknown_variables_are_named(tmp_path, monkeypatch):
    """A misspelt or removed EMPS_* variable, in the environment or in .env, gets a warning that
    names it and the setting it resembles; settings the platform sets for its children do not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "EMPS_ML_CALIBRATION_TIME_FRACTION=0.2\nEMPS_SEVERITY_HIGH=0.7\n"
    )
    result = CliRunner().invoke(
        app,
        ["config", "example"],
        env={"EMPS_SEVERTY_HIGH": "0.5", "EMPS_PROJECT_ROOT": "/x", "EMPS_DBT_HOST": "h"},
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: EMPS_SEVERTY_HIGH (in the environment) is not an EMPS setting and is ignored; "
        "did you mean EMPS_SEVERITY_HIGH?",
        "warning: EMPS_ML_CALIBRATION_TIME_FRACTION (in .env) is not an EMPS setting and is "
        "ignored; did you mean EMPS_ML_TEST_TIME_FRACTION?",
    ]
