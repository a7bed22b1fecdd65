"""`emps model ...` and `emps predict` as an ML engineer or technician runs them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from emps.cli import app
from emps.ml import synthetic
from emps.ml.evaluate import HEADLINE_KEYS
from emps.ml.train import training_steps

runner = CliRunner()


def test_train_evaluate_list_promote_and_predict_from_the_shell(ml_env, synthetic_examples):
    """Train promotes the first champion; evaluate --json ends with the headline keys; predict explains."""
    examples, _ = synthetic_examples
    synthetic.load_examples(examples, ml_env, ml_env.ml.examples_relation)

    trained = runner.invoke(app, ["model", "train", "--actor", "tester"])
    assert trained.exit_code == 0, trained.output
    assert "first champion" in trained.output
    steps = training_steps(ml_env) + 2  # reading the examples, the gate
    assert f"{steps}/{steps} done" in trained.output  # the progress bar ran to its end

    evaluated = runner.invoke(app, ["model", "evaluate", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    line = json.loads(evaluated.output.strip().splitlines()[-1])
    assert list(line) == list(HEADLINE_KEYS)
    assert all(v is None or isinstance(v, float) for v in line.values())

    listed = runner.invoke(app, ["model", "list"])
    assert listed.exit_code == 0 and "champion" in listed.output

    refused = runner.invoke(app, ["model", "promote"])
    assert refused.exit_code == 1 and "no challenger" in refused.output

    predicted = runner.invoke(app, ["predict", "--equipment", "EQ-0006", "--json"])
    assert predicted.exit_code == 0, predicted.output
    prediction = json.loads(predicted.output.strip().splitlines()[-1])
    assert prediction["model_version"] == "1" and prediction["explanation"][0]["label"]

    bad = runner.invoke(app, ["predict", "--equipment", "EQ-0006", "--set", "vibration"])
    assert bad.exit_code == 1 and "FEATURE=NUMBER" in bad.output
