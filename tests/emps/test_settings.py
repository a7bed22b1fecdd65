"""Settings: every EMPS_* variable reaches its place in the areas, documented in .env.example,
secrets never shown."""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from typer.testing import CliRunner

from emps.cli import app
from emps.commands.config import env_example
from emps.settings import PROJECT_ROOT, MLSettings, Settings, Variable, variables


def _other_value(variable: Variable) -> str:
    """A valid value for the variable that is not its default, as a user would write it."""
    info, default = variable.info, variable.info.default
    annotation = info.annotation
    if isinstance(annotation, types.UnionType):  # X | None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    limits = {k: getattr(m, k) for m in info.metadata for k in ("le", "lt") if hasattr(m, k)}
    if variable.name == "EMPS_TIMEZONE":
        return "Europe/London"
    if typing.get_origin(annotation) is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != default)
    if any(getattr(m, "pattern", None) for m in info.metadata):  # detach|drop
        return "drop" if default == "detach" else "detach"
    if annotation is bool:
        return str(not default).lower()
    if annotation is int:
        bigger = default + 1
        return str(bigger if bigger <= limits.get("le", bigger) else default - 1)
    if annotation is float:
        step = 0.01 if limits else 1  # fractions and bands rise by a little, keeping their order
        return str((default or 1) + step)
    if annotation is Path:
        return f"/srv/emps-test/{variable.field}"
    return f"https://{variable.field.replace('_', '-')}.example.test/{{to}}"  # URLs, names


def _expected(variable: Variable, raw: str) -> object:
    return TypeAdapter(variable.info.annotation).validate_python(raw)


def _landed(settings: Settings) -> dict[str, object]:
    return {variable.name: variable.value(settings) for variable in variables()}


def test_every_variable_reaches_its_field_from_the_environment(monkeypatch, tmp_path):
    """Each EMPS_* variable a user has set keeps setting the same value, now read from its area
    (EMPS_ML_N_ESTIMATORS as settings.ml.n_estimators)."""
    monkeypatch.chdir(tmp_path)  # no .env
    raw = {variable.name: _other_value(variable) for variable in variables()}
    for name, value in raw.items():
        monkeypatch.setenv(name, value)
    landed = _landed(Settings())
    for variable in variables():
        assert landed[variable.name] == _expected(variable, raw[variable.name]), variable.name
        assert landed[variable.name] != variable.info.default, variable.name


def test_every_variable_reaches_its_field_from_dot_env(monkeypatch, tmp_path):
    """The same from a .env file in the working directory, names in any case as before."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("EMPS_")]:
        monkeypatch.delenv(name)
    raw = {variable.name: _other_value(variable) for variable in variables()}
    lines = [
        f"{name.lower() if i % 2 else name}={value!r}"
        for i, (name, value) in enumerate(raw.items())
    ]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    landed = _landed(Settings())
    for variable in variables():
        assert landed[variable.name] == _expected(variable, raw[variable.name]), variable.name
    ignored = Settings(_env_file=None).ml.n_estimators  # as before: _env_file=None reads none
    assert ignored == MLSettings.model_fields["n_estimators"].default


def test_keywords_beat_the_environment_which_beats_dot_env_field_by_field(monkeypatch, tmp_path):
    """Within one area, a keyword argument overrides only its own field: the environment still
    sets the others, and .env fills what neither gives."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("EMPS_ML_SEED=3\nEMPS_ML_N_JOBS=4\nEMPS_ML_CV_FOLDS=6\n")
    monkeypatch.setenv("EMPS_ML_N_JOBS", "5")
    monkeypatch.setenv("EMPS_ML_CV_FOLDS", "7")
    ml = Settings(ml={"cv_folds": 8}).ml
    assert (ml.seed, ml.n_jobs, ml.cv_folds) == (3, 5, 8)


def test_cross_field_checks_still_refuse_bad_combinations(monkeypatch):
    """Severity bands that do not rise, a lease shorter than two SMTP timeouts, and a token
    over plain http to another machine are refused, naming the variables to fix."""
    cases = {
        "EMPS_SEVERITY_HIGH": ("0.9", "severity bands must rise"),
        "EMPS_NOTIFY_LEASE_S": ("15", "EMPS_NOTIFY_LEASE_S (15) must be at least twice"),
        "EMPS_API_BASE_URL": ("http://api.example", "EMPS_API_BASE_URL"),
    }
    for name, (value, message) in cases.items():
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValueError, match=re.escape(message)):
                Settings(_env_file=None)


def test_errors_never_echo_a_password(monkeypatch):
    """A refused combination in the notifications area does not print the SMTP password that
    came with it, nor does an accepted one when shown or dumped."""
    monkeypatch.setenv("EMPS_SMTP_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("EMPS_NOTIFY_LEASE_S", "1")
    with pytest.raises(ValueError) as refused:
        Settings(_env_file=None)
    assert "hunter2" not in str(refused.value)
    accepted = Settings(_env_file=None, notifications={"lease_s": 60})
    assert accepted.notifications.smtp_password.get_secret_value() == "hunter2-very-secret"
    assert "hunter2" not in repr(accepted) and "hunter2" not in str(accepted.model_dump())


def test_a_flat_or_misspelt_name_in_code_is_refused(settings):
    """Settings(ml_seed=1) and settings.replace(ml={"sede": 1}) fail instead of changing
    nothing."""
    with pytest.raises(ValueError, match="ml_seed"):
        Settings(ml_seed=1)
    with pytest.raises(TypeError, match="sede"):
        settings.replace(ml={"sede": 1})
    assert settings.replace(ml={"seed": 99}).ml.seed == 99
    assert settings.ml.seed != 99


def test_env_example_documents_every_setting():
    """.env.example lists every EMPS_* variable with its default (regenerate with
    `emps config example > .env.example`)."""
    committed = (PROJECT_ROOT / ".env.example").read_text()
    assert committed == env_example()
    for variable in variables():
        assert f"# {variable.name}=" in committed
    assert "# ---- settings.ml " in committed


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
