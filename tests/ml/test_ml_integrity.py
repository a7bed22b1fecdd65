"""Model integrity: a champion is loaded only if its files are the ones EMPS recorded, only as
skops with the trusted types fixed in code; otherwise scoring keeps the last verified champion
and says why."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import mlflow
import mlflow.sklearn
import pytest
import skops.io
from sklearn.preprocessing import StandardScaler

from emps.db import Role, connect
from emps.ml import predict, registry
from emps.ml.train import train_and_register


def _champion(settings, examples, failures, actor: str = "tester") -> str:
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, actor, settings, examples, failures, force=True)
    return version


def _model_file(settings, version: str) -> Path:
    """Where a version's model file lives in the artifact store (what an intruder would edit)."""
    uri = registry.client(settings).get_model_version_download_uri(settings.ml.model_name, version)
    return Path(uri.removeprefix("file://")) / "model.skops"


def test_promotion_records_the_files_hash_and_scoring_checks_it(ml_settings, examples_in_db):
    """Each promotion records the SHA-256 of the version's files, which is what scoring loads."""
    examples, failures = examples_in_db
    version = _champion(ml_settings, examples, failures)
    with connect(Role.OWNER, ml_settings) as conn:
        recorded = conn.execute(
            "select artifact_sha256 from ops.model_promotions where model_name = %s "
            "and to_version = %s",
            (ml_settings.ml.model_name, version),
        ).fetchone()[0]
    assert recorded == registry.version_digest(version, ml_settings)
    report = predict.score_equipment(ml_settings, emit_events=False)
    assert report.model_version == version and report.champion_refused is None


def test_a_tampered_champion_is_not_loaded_and_the_last_verified_one_scores(
    ml_settings, examples_in_db, caplog
):
    """A champion whose files changed after promotion is refused; scoring goes on with the
    previous champion, and the report and the log say why."""
    examples, failures = examples_in_db
    first = _champion(ml_settings, examples, failures)
    second = _champion(ml_settings, examples, failures)
    predict.forget_cached_models()
    with _model_file(ml_settings, second).open("ab") as model_file:
        model_file.write(b"\0")  # one byte more is enough
    report = predict.score_equipment(ml_settings, emit_events=False)
    assert report.model_version == first
    assert report.champion_refused and f"model version {second}" in report.champion_refused
    assert "files changed" in report.champion_refused
    assert f"scoring with v{first}" in caplog.text
    with connect(Role.OWNER, ml_settings) as conn:
        versions = {
            v for (v,) in conn.execute("select distinct model_version from ops.predictions")
        }
    assert versions == {first}
    # The dashboard's what-if refuses it too.
    assert predict.predict_equipment("EQ-0006", settings=ml_settings)["model_version"] == first


def test_with_no_verified_champion_left_scoring_stops_and_says_why(ml_settings, examples_in_db):
    """When the only champion's files changed, nothing is scored."""
    examples, failures = examples_in_db
    only = _champion(ml_settings, examples, failures)
    predict.forget_cached_models()
    _model_file(ml_settings, only).write_bytes(b"not a model")
    with pytest.raises(registry.ModelIntegrityError, match="files changed"):
        predict.score_equipment(ml_settings, emit_events=False)


def test_a_pickled_model_is_never_loaded(ml_settings, examples_in_db):
    """A version saved as a pickle, even promoted by hand, is refused without being read."""
    examples, failures = examples_in_db
    first = _champion(ml_settings, examples, failures)
    model = train_and_register(ml_settings, examples, failures).model
    registry.client(ml_settings)
    with mlflow.start_run(experiment_id=registry.ensure_experiment(ml_settings)):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
            registered_model_name=ml_settings.ml.model_name,
        )
    pickled = str(info.registered_model_version)
    registry.run_gate(pickled, "someone", ml_settings, force=True)
    assert registry.alias_version(registry.CHAMPION, ml_settings) == pickled
    predict.forget_cached_models()
    report = predict.score_equipment(ml_settings, emit_events=False)
    assert report.model_version == first
    assert "cloudpickle" in report.champion_refused and "only skops" in report.champion_refused


def _with_module_renamed(model_file: Path, old: str, new: str) -> None:
    """Rewrite a skops file as if its types had been saved from module `old`, not `new`."""
    with zipfile.ZipFile(io.BytesIO(model_file.read_bytes())) as source:
        schema = json.loads(source.read("schema.json"))
        members = {m.filename: source.read(m) for m in source.infolist()}

    def rename(node):
        if isinstance(node, dict):
            if node.get("__module__") == new:
                node["__module__"] = old
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    rename(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(model_file, "w") as target:
        for name, content in members.items():
            target.writestr(name, content)


def _record_as_promoted(settings, version: str) -> None:
    """Record a version's files as they are now, as EMPS did when it promoted them."""
    digest = registry.version_digest(version, settings)
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            "update ops.model_promotions set artifact_sha256 = %s "
            "where model_name = %s and to_version = %s",
            (digest, settings.ml.model_name, version),
        )
        conn.execute(
            "update ops.model_artifacts set artifact_sha256 = %s "
            "where model_name = %s and version = %s",
            (digest, settings.ml.model_name, version),
        )


def test_a_champion_logged_before_the_package_move_still_scores(ml_settings, examples_in_db):
    """A champion whose model file names its class by the pre-move path (ml.model, before the
    code moved into emps) is verified against its recorded hash and scores as before; the same
    file changed after it was recorded is still refused."""
    examples, failures = examples_in_db
    old = _champion(ml_settings, examples, failures)
    legacy = _champion(ml_settings, examples, failures)
    model_file = _model_file(ml_settings, legacy)
    _with_module_renamed(model_file, "ml.model", "emps.ml.model")
    assert "ml.model.FailureModel" in skops.io.get_untrusted_types(file=model_file)
    _record_as_promoted(ml_settings, legacy)
    predict.forget_cached_models()
    report = predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    assert report.model_version == legacy and report.champion_refused is None
    assert report.scored > 0
    assert predict.predict_equipment("EQ-0006", settings=ml_settings)["model_version"] == legacy

    with model_file.open("ab") as handle:
        handle.write(b"\0")
    predict.forget_cached_models()
    report = predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    assert report.model_version == old and "files changed" in report.champion_refused


def test_only_the_models_own_pre_move_name_is_read_as_its_new_one(tmp_path):
    """Renaming reaches the model's own class only: another type under the old `ml` package
    stays an untrusted type, and the file is refused."""
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"
    )
    skops.io.dump(StandardScaler(), tmp_path / "model.skops")
    _with_module_renamed(tmp_path / "model.skops", "ml.model", "sklearn.preprocessing._data")
    with pytest.raises(registry.ModelIntegrityError, match="ml.model.StandardScaler"):
        registry._read_model(tmp_path, "9")


def test_a_model_file_with_untrusted_types_is_refused(tmp_path):
    """A skops file holding a type outside the trusted list in code is refused, whatever its own
    MLmodel says it trusts."""
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"
        "    skops_trusted_types: [builtins.eval]\n"
    )
    skops.io.dump({"call": eval}, tmp_path / "model.skops")  # noqa: S307 - the hostile payload
    with pytest.raises(registry.ModelIntegrityError, match="builtins.eval"):
        registry._read_model(tmp_path, "9")


def test_a_champion_moved_in_the_ui_to_a_version_emps_never_saw_is_refused(
    ml_settings, examples_in_db
):
    """Moving `champion` in MLflow to a version registered outside EMPS records the move, but
    scoring keeps the verified champion until someone vouches for it with `emps model promote`."""
    examples, failures = examples_in_db
    first = _champion(ml_settings, examples, failures)
    model = train_and_register(ml_settings, examples, failures).model
    with mlflow.start_run(experiment_id=registry.ensure_experiment(ml_settings)):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=list(registry.TRUSTED_TYPES),
            pip_requirements=["scikit-learn"],
            registered_model_name=ml_settings.ml.model_name,
        )
    outside = str(info.registered_model_version)
    registry.client(ml_settings).set_registered_model_alias(
        ml_settings.ml.model_name, registry.CHAMPION, outside
    )
    predict.forget_cached_models()
    report = predict.score_equipment(ml_settings, emit_events=False)
    assert report.model_version == first and report.champion_moved_in_ui
    assert "emps model promote" in report.champion_refused
    decision = registry.run_gate(outside, "ml.engineer", ml_settings)  # emps model promote
    assert decision.promoted and "vouched for by ml.engineer" in decision.reason
    predict.forget_cached_models()
    report = predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    assert report.model_version == outside and report.champion_refused is None
