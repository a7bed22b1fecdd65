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
