"""A history whose backtest is known by hand: feature rows that carry a plain signal exactly where
an alert should be, a model trained to alert on that signal and nothing else, and failures placed
to be warned, warned late, missed, or never to come (false alerts).

Every feature column holds ~5 while the signal is on and ~0 otherwise (plus a little noise), so
a forest separates them perfectly and its calibrated probability is ~1 on signal rows and ~0
elsewhere: the alert episodes are the signal spans. Names of types and features come from the
catalog. Used by the ML tests and, loaded by path, by the dashboard tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from emps.catalog import Catalog
from emps.db import Role, connect

DAY = pd.Timedelta(days=1)
SIGNAL = 5.0
# Hours since the last service on every row: far beyond any settling time.
LONG_AGO = 10_000.0


def wall_clock_type(catalog: Catalog) -> str:
    """The first equipment type whose clock is wall time (leads in days)."""
    return next(n for n, t in catalog.equipment_types.items() if t.clock.kind == "time")


def feature_rows(
    catalog: Catalog,
    equipment_id: str,
    start: pd.Timestamp,
    days: float,
    spans: list[tuple[pd.Timestamp, pd.Timestamp]],
    step: pd.Timedelta = pd.Timedelta(hours=1),
    seed: int = 0,
    half: list[tuple[pd.Timestamp, pd.Timestamp]] = (),
) -> pd.DataFrame:
    """One equipment's feature rows every `step`: the signal on within each (from, to) span
    of `spans`, at half strength within those of `half`."""
    ts = pd.date_range(start, start + days * DAY, freq=step, inclusive="left")
    level = np.zeros(len(ts))
    for strength, windows in ((SIGNAL / 2, half), (SIGNAL, spans)):
        for low, high in windows:
            level[(ts >= low) & (ts < high)] = strength
    rng = np.random.default_rng([seed, int(equipment_id.encode().hex(), 16) % 2**32])
    data = {}
    for name in catalog.feature_names():
        data[name] = level + rng.normal(0, 0.01, len(ts))
    data["since_maintenance"] = np.full(len(ts), LONG_AGO)
    frame = pd.DataFrame(data)
    frame.insert(0, "equipment_id", equipment_id)
    frame.insert(1, "ts", ts)
    frame.insert(2, "equipment_type", wall_clock_type(catalog))
    frame.insert(3, "site", "S1")
    return frame


def label(frame: pd.DataFrame, failures: pd.DataFrame, horizon: pd.Timedelta) -> pd.DataFrame:
    """The training labels of feature rows: next failure, days until it, within the horizon."""
    parts = []
    for equipment_id, rows in frame.groupby("equipment_id", sort=False):
        failed = np.sort(
            failures.loc[failures["equipment_id"] == equipment_id, "failed_at"].to_numpy()
        )
        after = np.searchsorted(failed, rows["ts"].to_numpy(), side="right")
        padded = np.append(failed, np.datetime64("NaT"))
        rows = rows.assign(next_failure_at=pd.to_datetime(padded[after], utc=True))
        parts.append(rows)
    labelled = pd.concat(parts, ignore_index=True)
    days = (labelled["next_failure_at"] - labelled["ts"]).dt.total_seconds() / 86400
    labelled["days_until_failure"] = days
    labelled["fails_within_horizon"] = (days <= horizon / DAY).fillna(False).astype(bool)
    return labelled


def training_history(
    catalog: Catalog,
    horizon: pd.Timedelta,
    equipment: int = 24,
    days: int = 90,
    graded: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labelled examples, failures): every other machine fails every 25 days, its signal on
    for the horizon before each failure (so signal and label agree), every 2 hours.

    `graded`: the other machines show the signal at half strength every 25 days, followed by
    a failure on a third of them: the model reads half strength as a probability near 1/3,
    between the bands (under the usual HIGH, above a HIGH of 0.2)."""
    start = pd.Timestamp("2026-01-05", tz="UTC")
    frames, failures = [], []
    for index in range(equipment):
        equipment_id = f"TR-{index:03d}"
        spans, half = [], []
        first = start + (15 + index % 7) * DAY
        if index % 2 == 0 or (graded and index % 6 == 1):
            failed_at = first
            while failed_at < start + (days - 1) * DAY:
                (spans if index % 2 == 0 else half).append((failed_at - horizon, failed_at))
                failures.append((equipment_id, failed_at, failed_at + pd.Timedelta(hours=6)))
                failed_at += 25 * DAY
        elif graded:
            moment = first
            while moment < start + (days - 1) * DAY:
                half.append((moment - horizon, moment))
                moment += 25 * DAY
        frames.append(
            feature_rows(
                catalog, equipment_id, start, days, spans, pd.Timedelta(hours=2), half=half
            )
        )
    events = pd.DataFrame(failures, columns=["equipment_id", "failed_at", "repaired_at"])
    return label(pd.concat(frames, ignore_index=True), events, horizon), events


@dataclass
class ReplayCase:
    """A stored history whose backtest from `start` to `end` (three weeks) is known:

    week 0: two alert episodes (one true, one false), one failure warned 4 days ahead;
    week 1: two alert episodes (one true, one false), one failure alerted 1 day ahead (late);
    week 2: no alert, one failure missed.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    rows: pd.DataFrame
    failures: pd.DataFrame


def replay_case(
    catalog: Catalog,
    start: pd.Timestamp | None = None,
    after_days: float = 21,
    half_blip: bool = False,
) -> ReplayCase:
    """The history of ReplayCase: three weeks of context, three replayed, `after_days` more
    after (three weeks: an alert with no failure after it is known to be false). `half_blip`:
    the week-1 false alert's signal is at half strength (an alert only under lower bands)."""
    start = start or pd.Timestamp("2026-05-25", tz="UTC")
    first = start - 21 * DAY
    w = start
    blip = [(w + 8 * DAY, w + 8.5 * DAY)]
    plan = {
        "BT-01": ([(w, w + 4 * DAY)], [w + 4 * DAY], []),  # warned 4 days ahead
        "BT-02": ([(w + 9 * DAY, w + 10 * DAY)], [w + 10 * DAY], []),  # alerted 1 day ahead
        "BT-03": ([], [w + 16 * DAY], []),  # missed
        "BT-04": ([(w + 2 * DAY, w + 3 * DAY)], [], []),  # false, week 0
        "BT-05": ([] if half_blip else blip, [], blip if half_blip else []),  # false, week 1
    }
    frames, failures = [], []
    for equipment_id, (spans, failed, half) in plan.items():
        frames.append(feature_rows(catalog, equipment_id, first, 42 + after_days, spans, half=half))
        failures += [(equipment_id, f, f + pd.Timedelta(hours=6)) for f in failed]
    events = pd.DataFrame(failures, columns=["equipment_id", "failed_at", "repaired_at"])
    return ReplayCase(start, start + 21 * DAY, pd.concat(frames, ignore_index=True), events)


def store_failures(failures: pd.DataFrame, settings) -> None:
    """Record the failures in raw.failure_events (their equipment must be registered)."""
    with connect(Role.OWNER, settings) as conn:
        conn.cursor().executemany(
            "insert into raw.failure_events (equipment_id, failed_at, repaired_at, source) "
            "values (%s, %s, %s, 'import')",
            [
                (row.equipment_id, row.failed_at.to_pydatetime(), row.repaired_at.to_pydatetime())
                for row in failures.itertuples()
            ],
        )
