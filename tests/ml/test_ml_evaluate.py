"""Event-level figures at the alerting band, remaining-life figures and their intervals, on
held-out rows built by hand, so every count can be checked against the story it tells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emps.catalog import load_catalog
from emps.ml.evaluate import (
    RUN_TO_FAILURE,
    clopper_pearson,
    event_figures,
    history_kind,
    kfold_splits,
    paired_comparison,
    poisson_interval,
    remaining_life_figures,
    split_examples,
)

FLEETS = Path(__file__).parent.parent / "fleets"
START = pd.Timestamp("2026-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def hourly(equipment_id: str, days: float, equipment_type: str = "generator") -> pd.DataFrame:
    ts = pd.date_range(START, START + days * DAY, freq="h", inclusive="left")
    return pd.DataFrame(
        {"equipment_id": equipment_id, "ts": ts, "equipment_type": equipment_type}
    ).assign(last_observed_at=ts[-1])


def alert_between(rows: pd.DataFrame, spans: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """Probability 0.9 (HIGH) inside the given day spans of each equipment, 0.05 elsewhere."""
    p = np.full(len(rows), 0.05)
    offset = (rows["ts"] - START) / DAY
    for equipment_id, windows in spans.items():
        for low, high in windows:
            p[((rows["equipment_id"] == equipment_id) & (offset >= low) & (offset < high))] = 0.9
    return p


def failures(*items: tuple[str, float, bool]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "equipment_id": e,
                "failed_at": START + day * DAY,
                "repaired_at": START + day * DAY,
                "sudden": s,
            }
            for e, day, s in items
        ]
    )


def test_a_failure_counts_as_warned_only_with_an_alert_the_inspection_lead_ahead(settings):
    """Of three failures, the one alerted 5 days ahead is warned, the one alerted 1 day ahead
    is alerted but not warned (crews need 3 days), the silent one is missed; leads in days."""
    rows = pd.concat([hourly("A", 40), hourly("B", 40), hourly("C", 40)])
    p = alert_between(rows, {"A": [(25, 30)], "B": [(29, 30)]})
    figures = event_figures(rows, p, failures(("A", 30, False), ("B", 30, False), ("C", 30, False)))
    assert figures["failures_evaluated"] == 3
    assert figures["failures_warned"] == 1 and figures["failures_alerted"] == 2
    assert figures["failures_warned_share"] == pytest.approx(1 / 3)
    assert figures["median_lead"] == pytest.approx(1.0)  # leads 5, 1 and 0 (missed) days
    low, high = clopper_pearson(1, 3)
    assert (
        figures["failures_warned_share_ci95_low"],
        figures["failures_warned_share_ci95_high"],
    ) == (
        pytest.approx(low),
        pytest.approx(high),
    )


def test_alerts_before_the_look_back_or_the_last_repair_do_not_warn(settings):
    """An alert 25 days before a failure lies outside the 3 H (21 day) look-back, and one
    before the machine's previous failure belongs to its earlier life: neither warns."""
    rows = pd.concat([hourly("A", 60), hourly("B", 60)])
    p = alert_between(rows, {"A": [(10, 11)], "B": [(18, 20)]})
    figures = event_figures(rows, p, failures(("A", 35, False), ("B", 20, False), ("B", 45, False)))
    leads = {f: figures[f] for f in ("failures_evaluated", "failures_alerted")}
    assert leads == {"failures_evaluated": 3, "failures_alerted": 1}  # only B's first failure


def test_sudden_failures_are_counted_apart_from_the_warned_share(settings):
    """A failure no sensor foretold is not held against the warned share, but is counted."""
    rows = pd.concat([hourly("A", 40), hourly("B", 40)])
    p = alert_between(rows, {"A": [(20, 30)]})
    figures = event_figures(rows, p, failures(("A", 30, False), ("B", 30, True)))
    assert figures["failures_warned_share"] == 1.0
    assert figures["failures_sudden"] == 1 and figures["failures_sudden_warned"] == 0


def test_false_alert_episodes_are_counted_per_equipment_month(settings):
    """Alerts with gaps shorter than the auto-resolve time are one episode; an episode with no
    failure within 3 H is false, one whose outcome the history cannot tell yet is left out,
    and so is the time it could not be judged in."""
    rows = hourly("A", 90)
    # Days 10-11 and 11.5-12: one episode (12 h gap < 24 h); day 40: another; day 85: too late
    # to tell (history ends at 90, 3 H = 21 days); none precedes a failure.
    p = alert_between(rows, {"A": [(10, 11), (11.5, 12), (40, 40.5), (85, 86)]})
    figures = event_figures(rows, p, None, settings)
    assert figures["alert_episodes"] == 3
    assert figures["false_alert_episodes"] == 2
    assert figures["undetermined_alert_episodes"] == 1
    months = (90 - 21) / (365.25 / 12)  # the rows whose 3 H ahead lies inside the history
    assert figures["equipment_months"] == pytest.approx(months, rel=0.01)
    assert figures["false_alert_episodes_per_100_equipment_months"] == pytest.approx(
        100 * 2 / months, rel=0.01
    )
    assert figures["alerts_per_week"] == pytest.approx(3 / (90 / 7), rel=0.01)


def test_a_high_while_a_repair_settles_is_no_alert_episode(settings):
    """After a failure and its repair the feature windows still hold the failing machine for
    the longest window (24 h): HIGH rows then are no alert, as the alert rules treat them, so
    they raise no false alarm; without the time since the repair they would."""
    rows = hourly("A", 60)
    repaired = START + 30 * DAY
    since = (rows["ts"] - repaired) / pd.Timedelta(hours=1)
    rows = rows.assign(since_maintenance=np.where(since >= 0, since, 24 * 30 + since))
    p = alert_between(rows, {"A": [(25, 30), (30, 30.5)]})
    figures = event_figures(rows, p, failures(("A", 30, False)), settings)
    assert figures["failures_warned"] == 1
    assert (figures["alert_episodes"], figures["false_alert_episodes"]) == (1, 0)

    unknown = event_figures(rows.drop(columns="since_maintenance"), p, failures(("A", 30, False)))
    assert (unknown["alert_episodes"], unknown["false_alert_episodes"]) == (2, 1)


def test_an_alert_before_a_failure_is_not_false_and_the_period_start_is_respected(settings):
    """An alert episode followed by a failure is a warning, not a false alarm; alerts and
    failures before the held-out period's start are look-back context only."""
    rows = hourly("A", 60)
    p = alert_between(rows, {"A": [(5, 6), (40, 45)]})
    figures = event_figures(
        rows, p, failures(("A", 8, False), ("A", 45, False)), start=START + 20 * DAY
    )
    assert figures["failures_evaluated"] == 1 and figures["failures_warned"] == 1
    assert figures["alert_episodes"] == 1 and figures["false_alert_episodes"] == 0


def test_rate_intervals_come_from_resampling_equipment(settings):
    """With false alarms on some machines only, the interval of the rate spans the figure and
    is wide; with fewer than three machines there is no interval rather than a false one."""
    machines = [hourly(f"M{i}", 90) for i in range(12)]
    rows = pd.concat(machines)
    p = alert_between(rows, {f"M{i}": [(10, 11)] for i in range(0, 12, 3)})
    figures = event_figures(rows, p, None, settings)
    low = figures["false_alert_episodes_per_100_equipment_months_ci95_low"]
    high = figures["false_alert_episodes_per_100_equipment_months_ci95_high"]
    assert low < figures["false_alert_episodes_per_100_equipment_months"] < high
    two = event_figures(pd.concat(machines[:2]), p[: 2 * len(machines[0])], None, settings)
    assert np.isnan(two["false_alert_episodes_per_100_equipment_months_ci95_low"])


def test_no_false_alarm_still_has_an_upper_bound(settings):
    """Three machines with no false alert in 69 judged days each: the rate is 0, and its
    interval's upper end is the exact Poisson bound of a zero count (3.69 events) over that
    time, not the empty interval resampling alone gives."""
    rows = pd.concat([hourly(e, 90) for e in ("A", "B", "C")])
    figures = event_figures(rows, np.full(len(rows), 0.05), None, settings)
    months = figures["equipment_months"]
    assert figures["false_alert_episodes_per_100_equipment_months"] == 0.0
    assert figures["false_alert_episodes_per_100_equipment_months_ci95_low"] == 0.0
    assert figures["false_alert_episodes_per_100_equipment_months_ci95_high"] == pytest.approx(
        100 * 3.689 / months, rel=0.01
    )
    assert poisson_interval(0) == (0.0, pytest.approx(3.689, rel=0.001))
    assert poisson_interval(10) == (
        pytest.approx(4.795, rel=0.001),
        pytest.approx(18.39, rel=0.001),
    )


def test_clopper_pearson_is_the_exact_binomial_interval():
    """The failure-level interval matches the textbook values (none of ten, all of ten, half)."""
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(0.30850, abs=1e-4))
    assert clopper_pearson(10, 10) == (pytest.approx(0.69150, abs=1e-4), 1.0)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.18709, abs=1e-4) and high == pytest.approx(0.81291, abs=1e-4)
    assert all(np.isnan(v) for v in clopper_pearson(0, 0))


def test_lead_time_is_told_in_the_type_clock_unit(settings):
    """On a cycle clock (2 h per cycle) an alert 40 cycles before the failure is a 40-cycle
    lead, and the inspection lead counts in cycles too."""
    catalog = load_catalog(FLEETS / "turbofan.yaml")
    clock = catalog.equipment_types["turbofan"].clock
    cycles = np.arange(1, 151)
    ts = pd.Timestamp(clock.start) + pd.to_timedelta(cycles * clock.interval_s, "s")
    rows = pd.DataFrame({"equipment_id": "ENG-001", "ts": ts, "equipment_type": "turbofan"})
    p = np.where(cycles >= 110, 0.9, 0.05)
    failed = pd.DataFrame(
        {
            "equipment_id": ["ENG-001"],
            "failed_at": [ts[-1] + pd.Timedelta(seconds=clock.interval_s)],
        }
    )
    figures = event_figures(rows, p, failed, settings, catalog=catalog)
    assert figures["median_lead"] == pytest.approx(41.0)
    assert figures["failures_warned"] == 1


def test_remaining_life_error_counts_censored_rows_with_what_their_history_proves(settings):
    """Rows of a known failure are scored against the capped truth; a censored row (no failure
    known) whose history already outlasts the cap is exact, and one with a shorter history only
    counts the shortfall of an estimate below what it proved; the naive constant is scored
    the same way."""
    rows = hourly("A", 40)
    rows = rows[rows["ts"] < START + 30 * DAY]  # the 30 days before a failure
    rows = rows.assign(days_until_failure=30 - (rows["ts"] - START) / DAY)
    censored = hourly("B", 30)  # never failed: censored, 30 days of history behind each row
    censored = censored.assign(days_until_failure=np.nan)
    both = pd.concat([rows, censored], ignore_index=True)
    truth = both["days_until_failure"].to_numpy()
    estimate = np.where(np.isnan(truth), 5.0, np.minimum(truth, 21.0))  # perfect on A
    figures = remaining_life_figures(both, estimate, 21.0, 21.0)
    assert figures["rul_rows"] == len(both)
    assert figures["rul_rows_censored"] == len(censored)
    # B's rows prove the time until its history ends; an estimate of 5 falls short of that
    # (capped at 21) and the error counts only the shortfall.
    proved = np.minimum((censored["last_observed_at"] - censored["ts"]) / DAY, 21.0)
    expected = np.concatenate([np.zeros(len(rows)), np.clip(proved - 5.0, 0, None)])
    assert figures["rul_mae_displayed"] == pytest.approx(expected.mean(), rel=1e-6)
    naive = np.concatenate(
        [21.0 - np.minimum(rows["days_until_failure"], 21.0), np.zeros(len(censored))]
    )
    assert figures["rul_mae_naive"] == pytest.approx(naive.mean(), rel=1e-6)


def runs_to_failure(units: int) -> pd.DataFrame:
    frames = []
    for i in range(units):
        rows = hourly(f"U{i:03d}", 20 + i)
        frames.append(
            rows.assign(
                next_failure_at=rows["ts"].max() + pd.Timedelta(hours=1),
                fails_within_horizon=rows["ts"] > rows["ts"].max() - 7 * DAY,
                label_is_final=True,
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_run_to_failure_histories_hold_out_whole_units_without_a_cut_in_time(settings):
    """Units whose histories end in their failure are recognised, held out whole with every
    row (no calendar cut drops the units that ended early), and the k-fold holds each out once."""
    frame = runs_to_failure(40)
    assert history_kind(frame) == RUN_TO_FAILURE
    split = split_examples(frame, settings)
    assert split.kind == RUN_TO_FAILURE
    parts = [split.train, split.gate.rows, split.report.rows]
    assert sum(len(p) for p in parts) == len(frame)
    ids = [set(p["equipment_id"]) for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    folds = kfold_splits(frame, 5, settings)
    held = [set(h.rows["equipment_id"]) for _, h in folds]
    assert sorted(i for h in held for i in h) == sorted(frame["equipment_id"].unique())
    for train, fold in folds:
        assert not set(train["equipment_id"]) & set(fold.rows["equipment_id"])


def test_a_fleet_in_service_splits_by_equipment_and_time_with_look_back_context(
    settings, synthetic_examples
):
    """A continuous history keeps the calendar cut; held-out slices carry 3 H of context
    before the period that counts, never seen in training."""
    examples = synthetic_examples[0]
    assert history_kind(examples) != RUN_TO_FAILURE
    split = split_examples(examples, settings)
    test_start = pd.Timestamp(split.windows["test_start"])
    assert split.report.start == test_start
    assert split.report.rows["ts"].min() < test_start <= split.report.period["ts"].min()
    assert not set(split.train["equipment_id"]) & set(split.held_out.rows["equipment_id"])
    assert split.train["ts"].max() < pd.Timestamp(split.windows["train_end"])


def test_paired_comparison_sees_through_a_gain_on_one_machine(settings):
    """A challenger better than the champion on one machine alone is better only within
    noise: resampling the equipment leaves it out often, so the interval reaches zero."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(20):
        rows = hourly(f"M{i:02d}", 30)
        label = (i % 2 == 0) & (rows["ts"] > START + 25 * DAY)
        frames.append(rows.assign(fails_within_horizon=label))
    rows = pd.concat(frames, ignore_index=True)
    y = rows["fails_within_horizon"].to_numpy()
    champion = np.clip(0.5 * y + rng.uniform(0, 0.6, len(rows)), 0, 1)
    challenger = champion.copy()
    lucky = (rows["equipment_id"] == "M00").to_numpy() & y
    challenger[lucky] = 1.0
    comparison = paired_comparison(rows, challenger, champion, "pr_auc")
    assert comparison.improvement > 0
    assert comparison.low <= 0 < comparison.high
    same = paired_comparison(rows, champion, champion, "pr_auc")
    assert same.improvement == 0 and same.low == same.high == 0
    better = paired_comparison(rows, np.clip(0.9 * y + 0.05, 0, 1), champion, "pr_auc")
    assert better.low > 0
