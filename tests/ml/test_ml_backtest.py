"""Backtest (shadow replay): per-week alerts, warned failures and leads, false alerts, on
histories built so that every count is known by hand (tests/ml/backtest_history.py)."""

from __future__ import annotations

import json

import backtest_history
import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emps.catalog import load_catalog
from emps.cli import app
from emps.ml import registry, synthetic
from emps.ml.backtest import ScoredHistory, parse_bands, replay
from emps.ml.train import train_and_register

runner = CliRunner()
DAY = pd.Timedelta(days=1)


def hand_scored(case: backtest_history.ReplayCase, p_of_second_false: float) -> ScoredHistory:
    """The case's rows with probability 0.9 where the signal is on, 0.05 elsewhere, and the
    second false alert (week 1) at `p_of_second_false`."""
    rows = case.rows.assign(last_observed_at=case.rows["ts"].max())
    on = rows[load_catalog().feature_names()[0]] > backtest_history.SIGNAL / 2
    probability = np.where(on, 0.9, 0.05)
    second = (rows["equipment_id"] == "BT-05").to_numpy()
    probability[second & on.to_numpy()] = p_of_second_false
    return ScoredHistory(case.start, case.end, "7", rows, probability, case.failures, 60)


def test_a_replay_counts_each_weeks_alerts_warned_failures_and_false_alerts(settings):
    """Week 0: a failure warned 4 days ahead and a false alert; week 1: a failure alerted only
    1 day ahead and a MEDIUM blip below the alerting band; week 2: a missed failure. Lowering
    HIGH below the blip turns it into a false alert, raising it above everything misses all."""
    case = backtest_history.replay_case(load_catalog(settings.catalog_path))
    history = hand_scored(case, p_of_second_false=0.5)

    result = replay(history, settings)
    weeks = [
        (w.alerts, w.false_alerts, w.failures, w.warned, w.late, w.missed) for w in result.weeks
    ]
    assert weeks == [(2, 1, 1, 1, 0, 0), (1, 0, 1, 0, 1, 0), (0, 0, 1, 0, 0, 1)]
    assert [w.leads for w in result.weeks] == [[pytest.approx(4.0)], [pytest.approx(1.0)], []]
    assert [f.outcome for f in result.failures] == ["warned", "late", "missed"]
    assert result.total.median_lead == pytest.approx(2.5)
    assert result.summary() == "3 alerts, 1 of 3 failures warned ≥ 3 days ahead"
    assert result.weeks[0].week_start == case.start

    lower = replay(history, settings, parse_bands("high=0.45"))
    assert [w.alerts for w in lower.weeks] == [2, 2, 0]
    assert lower.total.false_alerts == 2 and lower.bands["severity_high"] == 0.45

    higher = replay(history, settings, parse_bands("0.3,0.95,0.97"))
    assert higher.total.alerts == 0 and higher.total.missed == 3
    assert higher.total.median_lead is None


def test_bands_typed_wrong_are_refused_with_what_to_type():
    """Bands that are not three rising probabilities, or an unknown name, say what to give."""
    assert parse_bands("0.3, 0.5, 0.85") == {
        "severity_medium": 0.3,
        "severity_high": 0.5,
        "severity_critical": 0.85,
    }
    for wrong in ("0.5,0.6", "urgent=0.4", "high=1.5", "high=abc"):
        with pytest.raises(ValueError, match="bands"):
            parse_bands(wrong)


def _champion_on_the_signal(settings) -> str:
    """Train and promote a model that alerts on the history's signal (and nothing else)."""
    catalog = load_catalog(settings.catalog_path)
    examples, failures = backtest_history.training_history(
        catalog, pd.Timedelta(days=catalog.max_horizon_days)
    )
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "tester", settings, examples, failures, force=True)
    return version


def test_backtest_command_reports_the_hand_computed_weeks(ml_env):
    """`emps model backtest` scores the stored features with the champion: its JSON holds the
    weeks and totals worked out by hand, its table the same in words, and a challenger trained
    afterwards carries its backtest next to the champion's in MLflow."""
    settings = ml_env
    version = _champion_on_the_signal(settings)
    case = backtest_history.replay_case(load_catalog(settings.catalog_path))
    synthetic.load_examples(case.rows, settings, settings.ml.features_relation)
    backtest_history.store_failures(case.failures, settings)
    window = ["--from", f"{case.start:%Y-%m-%d}", "--to", f"{case.end:%Y-%m-%d}"]

    answer = runner.invoke(app, ["model", "backtest", *window, "--json"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.stdout.strip().splitlines()[-1])
    assert result["model_version"] == version
    weeks = [
        (w["alerts"], w["false_alerts"], w["failures"], w["warned"], w["late"], w["missed"])
        for w in result["weeks"]
    ]
    assert weeks == [(2, 1, 1, 1, 0, 0), (2, 1, 1, 0, 1, 0), (0, 0, 1, 0, 0, 1)]
    assert [w["leads"] for w in result["weeks"]] == [[4.0], [1.0], []]
    assert result["total"]["alerts"] == 4 and result["total"]["median_lead"] == 2.5
    assert [(f["equipment_id"], f["outcome"]) for f in result["failures"]] == [
        ("BT-01", "warned"),
        ("BT-02", "late"),
        ("BT-03", "missed"),
    ]
    assert result["equipment"] == 5

    table = runner.invoke(app, ["model", "backtest", *window, "--model", version])
    assert table.exit_code == 0, table.output
    assert f"backtest of version {version}" in table.stdout
    assert "4 alerts, 1 of 3 failures warned ≥ 3 days ahead" in table.stdout
    assert "scoring equipment" in table.stderr  # the progress bar

    nothing = runner.invoke(app, ["model", "backtest", *window, "--model", "challenger"])
    assert nothing.exit_code == 1 and "no 'challenger' version" in nothing.output
    wrong = runner.invoke(app, ["model", "backtest", *window, "--bands", "0.9,0.5"])
    assert wrong.exit_code == 1 and "MEDIUM,HIGH,CRITICAL" in wrong.output

    catalog = load_catalog(settings.catalog_path)
    examples, failures = backtest_history.training_history(
        catalog, pd.Timedelta(days=catalog.max_horizon_days)
    )
    challenger = train_and_register(settings, examples, failures).version
    client = registry.client(settings)
    registered = client.get_model_version(settings.ml.model_name, challenger)
    tags = registered.tags
    # On the machines its training left out only, as the run's equipment slices list them.
    slices = mlflow.artifacts.load_dict(f"runs:/{registered.run_id}/equipment_slices.json")
    assert slices["train"] and slices["gate"] and slices["report"]
    unseen = failures[~failures["equipment_id"].isin(slices["train"])]
    last = examples["ts"].max()
    window_failures = int(
        ((unseen["failed_at"] >= last - 8 * 7 * DAY) & (unseen["failed_at"] < last)).sum()
    )
    assert 0 < window_failures < int((failures["failed_at"] >= last - 8 * 7 * DAY).sum())
    assert tags["backtest.champion.model_version"] == version
    assert tags["backtest.model_version"] == challenger
    assert tags["backtest.from"] == tags["backtest.champion.from"]
    for prefix in ("backtest.", "backtest.champion."):
        assert int(tags[f"{prefix}failures"]) == window_failures
        assert int(tags[f"{prefix}failures_warned"]) == window_failures  # the signal is a week
        assert int(tags[f"{prefix}false_alert_episodes"]) == 0
