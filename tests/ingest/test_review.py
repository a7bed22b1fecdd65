"""Conflicting re-sends and the admin's review of the quarantine: accept (audited; the window's
features rebuilt and rescored, earlier predictions keeping a note), dismiss, retry rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from emps import actions, transform
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ingest import corrections
from emps.ingest.landing import Landing
from emps.ingest.pipeline import ingest_landing
from emps.settings import Settings
from emps.users import User, UserRole, add_user, sign_in
from tests.ingest.corpus import Readings

UNIT = "unit-c3"


@pytest.fixture
def fleet(ingest_db: Settings) -> Readings:
    """One registered machine and the catalog's readings for it (6 h ago onwards)."""
    catalog = load_catalog(ingest_db.catalog_path)
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "values (%s, %s, 'north')",
            (UNIT, catalog.type_names[0]),
        )
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    return Readings(catalog, base, [UNIT])


def _drop(landing: Landing, name: str, data: bytes) -> None:
    (landing.incoming / name).write_bytes(data)


def _conflicts(query) -> list[tuple]:
    return query(
        "select id, raw_values, stored_values, resolution from raw.quarantined_rows "
        "where kind = 'conflict' order by id"
    )


def test_a_changed_resend_is_kept_with_both_versions_and_an_admin_accepts_it(
    fleet: Readings, landing: Landing, ingest_db: Settings, admin, query
):
    """A re-send with another value leaves the stored reading in place and keeps both versions;
    an admin accepting it replaces the reading, audited with both, and queues the rebuild of its
    window; a second decision on the same conflict is refused."""
    first = fleet.names[0]
    _drop(landing, "a.csv", fleet.csv([fleet.row(0), fleet.row(1)]))
    ingest_landing(ingest_db)
    changed = fleet.value(first, 2.5)
    _drop(landing, "b.csv", fleet.csv([fleet.row(0, **{first: changed}), fleet.row(1)]))
    [outcome] = ingest_landing(ingest_db).files
    assert (outcome.status, outcome.rows_conflict, outcome.rows_duplicate) == ("conflict", 1, 1)
    [(row_id, received, stored, resolution)] = _conflicts(query)
    assert received[first] == changed and stored[first] == fleet.value(first)
    assert resolution is None
    reading = f"select {first}, ingest_file_id from raw.sensor_readings where ts = %s"  # noqa: S608
    at = fleet.base
    assert query(reading, (at,)) == [(fleet.value(first), 1)]

    correction = actions.accept_conflict(admin, row_id, "device recalibrated", ingest_db)
    assert query(reading, (at,)) == [(changed, 2)]
    assert _conflicts(query)[0][3] == "accepted"
    [(actor, role, details)] = query(
        "select actor, actor_role, details from ops.audit_log "
        "where action = 'reading.accept_conflict'"
    )
    assert (actor, role) == (admin.username, "Admin")
    assert details["from"][first] == fleet.value(first) and details["to"][first] == changed
    assert details["note"] == "device recalibrated"
    pending = corrections.pending_corrections(ingest_db)
    assert [(c.id, c.equipment_id, c.ts) for c in pending] == [(correction, UNIT, at)]
    with pytest.raises(actions.ActionFailed, match="already accepted"):
        actions.dismiss_conflict(admin, row_id, None, ingest_db)


def test_only_admins_decide_and_a_kept_reading_stays(
    fleet: Readings, landing: Landing, ingest_db: Settings, admin, query
):
    """A technician may not accept a conflict (the app and the database both refuse); an admin
    keeping the stored reading closes the conflict, audited, and the reading is unchanged."""
    first = fleet.names[0]
    _drop(landing, "a.csv", fleet.csv([fleet.row(0)]))
    ingest_landing(ingest_db)
    _drop(landing, "b.csv", fleet.csv([fleet.row(0, **{first: fleet.value(first, 1)})]))
    ingest_landing(ingest_db)
    [(row_id, *_)] = _conflicts(query)
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        add_user(conn, "night.tech", "Technician", "a long enough password")
    tech = sign_in("night.tech", "a long enough password", settings=ingest_db)
    with pytest.raises(actions.NotAllowed):
        actions.accept_conflict(tech, row_id, None, ingest_db)
    # The database checks the role it stores for the session, not the one the app believes.
    believed_admin = User(tech.username, UserRole.ADMIN, token=tech.token)
    with pytest.raises(actions.ActionFailed, match="only Admin may do this"):
        actions.accept_conflict(believed_admin, row_id, None, ingest_db)

    actions.dismiss_conflict(admin, row_id, "a replayed old message", ingest_db)
    assert _conflicts(query)[0][3] == "dismissed"
    assert query(f"select {first} from raw.sensor_readings") == [(fleet.value(first),)]  # noqa: S608
    assert query(
        "select count(*) from ops.audit_log where action = 'reading.dismiss_conflict'"
    ) == [(1,)]
    assert corrections.pending_corrections(ingest_db) == []


def test_two_versions_of_one_reading_are_decided_one_after_the_other(
    fleet: Readings, landing: Landing, ingest_db: Settings, admin, query
):
    """Two different re-sends of one reading: accepting the first makes it the stored version
    the second is compared with, so the second can still be accepted after it."""
    first = fleet.names[0]
    _drop(landing, "a.csv", fleet.csv([fleet.row(0)]))
    ingest_landing(ingest_db)
    for number, shift in enumerate((1, 2)):
        _drop(
            landing,
            f"v{number}.csv",
            fleet.csv([fleet.row(0, **{first: fleet.value(first, shift)})]),
        )
        ingest_landing(ingest_db)
    (one, *_), (two, *_) = _conflicts(query)
    actions.accept_conflict(admin, one, None, ingest_db)
    assert _conflicts(query)[1][2][first] == fleet.value(first, 1)
    actions.accept_conflict(admin, two, None, ingest_db)
    assert query(f"select {first} from raw.sensor_readings") == [(fleet.value(first, 2),)]  # noqa: S608


def test_retried_rows_load_once_their_cause_is_fixed(
    fleet: Readings, landing: Landing, ingest_db: Settings, admin, query
):
    """Rows an admin asks to retry are validated again by the next run: a row of unregistered
    equipment loads once registered, a row the file ended inside loads as it is (its missing
    optional values empty), a row still invalid keeps its new reason; the ledger follows."""
    optional = fleet.optional
    cut = fleet.csv([fleet.row(0)]).rstrip(b"\n")
    if optional:  # the last line ends right before the optional readings
        columns = ["equipment_id", "timestamp", *fleet.required, *optional]
        cut = fleet.csv([fleet.row(0)], columns=columns)
        cut = cut.rstrip(b"\n").rsplit(b",", len(optional))[0]
    _drop(landing, "cut.csv", fleet.csv([fleet.row(1)]) + cut.split(b"\n", 1)[1])
    _drop(
        landing,
        "new-unit.csv",
        fleet.csv([fleet.row(2, equipment_id="unit-new"), fleet.row(3, **{fleet.names[0]: "x"})]),
    )
    ingest_landing(ingest_db)
    rows = dict(query("select reasons[1], id from raw.quarantined_rows"))
    ids = sorted(rows.values())
    assert len(ids) == 3
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select 'unit-new', equipment_type, site from raw.equipment where equipment_id = %s",
            (UNIT,),
        )
    assert actions.retry_quarantined(admin, ids, "registered unit-new", ingest_db) == 3
    report = ingest_landing(ingest_db)
    assert report.released_rows == (2 if optional else 1)
    resolved = dict(query("select id, resolution from raw.quarantined_rows"))
    assert sorted(resolved.values(), key=str) == sorted(
        ["released"] * (2 if optional else 1) + [None] * (1 if optional else 2), key=str
    )
    [(reasons, note)] = query(
        "select reasons, resolution_note from raw.quarantined_rows where resolution is null "
        "and raw_values ->> 'equipment_id' = %s",
        (UNIT,),
    )
    assert "is not a number" in reasons[0] and note.startswith("retried at")
    assert query(
        "select rows_loaded, rows_quarantined from raw.ingest_files where file_name = 'new-unit.csv'"
    ) == [(1, 1)]
    assert query("select count(*) from raw.sensor_readings where equipment_id = 'unit-new'") == [
        (1,)
    ]


def _stand_in_score(settings: Settings, column: str):
    """Scores feature rows by one feature (the champion's place, which needs a trained model):
    the rescored probability shows which features it saw."""
    from emps.ml.predict import write_predictions

    def score(features: pd.DataFrame) -> pd.DataFrame:
        low, high = features[column].min() - 1, features[column].max() + 1
        probability = ((features[column] - low) / (high - low + 1e-9)).clip(0, 1).round(6)
        return write_predictions(
            pd.DataFrame(
                {
                    "equipment_id": features["equipment_id"],
                    "ts": features["ts"],
                    "failure_probability": probability,
                    "health_score": (100 * (1 - probability)).round().astype(int),
                    "severity": "LOW",
                    "days_until_failure": float("nan"),
                    "remaining_life": float("nan"),
                    "life_unit": "day",
                    "remaining_life_beyond": False,
                    "assessment": "ok",
                    "assessment_reason": None,
                    "model_version": "stand-in",
                    "explanation": [[] for _ in range(len(features))],
                }
            ),
            settings,
        )

    return score


def test_an_accepted_correction_rebuilds_its_window_and_rescores_it(
    fleet: Readings, landing: Landing, ingest_db: Settings, admin, query
):
    """After an admin accepts a corrected reading, the next apply rebuilds the feature rows of the
    window it feeds (equal to a full rebuild), rescores the predictions of that window, and
    the predictions it replaces say why; predictions before the reading are untouched."""
    first = fleet.names[0]
    level = f"{first}_now"  # the feature that carries a slot's reading as it is
    rows = [fleet.row(10 * i) for i in range(36)]  # 6 h of 10-minute readings
    _drop(landing, "history.csv", fleet.csv(rows))
    ingest_landing(ingest_db)
    transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=ingest_db)
    score = _stand_in_score(ingest_db, level)
    with connect(Role.WRITER, ingest_db) as conn:
        conn.execute("set time zone 'UTC'")
        cur = conn.execute(
            "select * from analytics.fct_equipment_features where equipment_id = %s order by ts",
            (UNIT,),
        )
        features = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    score(features.iloc[::6])  # a prediction every hour
    corrected_at = fleet.base + timedelta(minutes=200)
    _drop(landing, "fix.csv", fleet.csv([fleet.row(200, **{first: fleet.value(first, 9)})]))
    ingest_landing(ingest_db)
    [(row_id, *_)] = _conflicts(query)
    actions.accept_conflict(admin, row_id, None, ingest_db)

    report = corrections.apply_corrections(
        ingest_db, build=lambda: transform.build_after_ingest(ingest_db), score=score
    )

    assert report.applied and report.note is None
    window = query(
        f"select ts, {level} from analytics.fct_equipment_features "  # noqa: S608
        "where equipment_id = %s and ts = %s",
        (UNIT, corrected_at),
    )
    [before] = features.loc[features["ts"] == corrected_at, level]
    assert [ts for ts, _ in window] == [corrected_at]
    assert window[0][1] > before  # the reading went up by 9, and so did its level
    rebuilt = query("select * from analytics.fct_equipment_features order by ts")
    transform.build(select=["fct_equipment_features"], full_refresh=True, settings=ingest_db)
    full = query("select * from analytics.fct_equipment_features order by ts")
    drop_ingested = [
        i
        for i, d in enumerate(
            query(
                "select column_name from information_schema.columns where table_schema = 'analytics' "
                "and table_name = 'fct_equipment_features' order by ordinal_position"
            )
        )
        if d[0] == "ingested_at"
    ]
    strip = lambda rs: [tuple(v for i, v in enumerate(r) if i not in drop_ingested) for r in rs]  # noqa: E731
    # Equal up to the rounding of a sum taken in another order (a window's sums against a scan).
    assert len(rebuilt) == len(full)
    for got, want in zip(strip(rebuilt), strip(full), strict=True):
        for g, w in zip(got, want, strict=True):
            assert g == (pytest.approx(w, rel=1e-9, abs=1e-9) if isinstance(w, float) else w)

    predictions = query(
        "select id, ts, note, failure_probability from ops.predictions order by ts, id"
    )
    replaced = [p for p in predictions if p[2] and p[2].startswith("superseded")]
    rescored = [p for p in predictions if p[2] and p[2].startswith("rescored")]
    in_window = {p[1] for p in predictions if p[1] >= corrected_at}
    assert {p[1] for p in replaced} == {p[1] for p in rescored} == in_window
    assert all(p[1] >= corrected_at for p in predictions if p[2] is not None)
    assert all(f"correction {report.applied[0]}" in p[2] for p in replaced + rescored)
    assert query("select rescored from ops.reading_corrections") == [(len(in_window),)]
    assert corrections.pending_corrections(ingest_db) == []
