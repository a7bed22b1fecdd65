"""The adversarial corpus (corpus.py) through the real ingest flow: every file ends loaded,
partial, duplicate, conflict or quarantined as expected, none stays claimed, the run never fails,
and the good rows of every partial file are loaded exactly once."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.settings import Settings, get_settings
from tests.ingest.corpus import MAX_BYTES, MAX_ROWS, build_corpus

EQUIPMENT = ["unit-a1", "unit-b2"]
NEVER_CLAIMED = {".hidden.csv", "upload.csv.part", "link.csv", "pipe.csv"}


def _register(settings: Settings) -> None:
    catalog = load_catalog(settings.catalog_path)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, %s, 'north' from unnest(%s::text[]) as id",
            (catalog.type_names[0], EQUIPMENT),
        )


def test_every_file_of_the_corpus_ends_with_its_outcome(
    prefect_server, landing: Landing, ingest_db: Settings, query, monkeypatch
):
    """Each hostile or real-gateway file gets its expected status, counts and reason in one run
    of the flow; nothing is left claimed, entries ingest never claims are reported, the good
    rows of partial files are stored once, and a second run changes nothing."""
    from emps.flows.ingest import ingest_sensor_drops

    _register(ingest_db)
    settings = get_settings()
    monkeypatch.setattr(settings.ingest, "max_file_rows", MAX_ROWS)
    monkeypatch.setattr(settings.ingest, "max_file_bytes", MAX_BYTES)
    monkeypatch.setattr(settings.ingest, "ignored_warn_s", 0)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=20)
    cases = build_corpus(load_catalog(settings.catalog_path), base, EQUIPMENT)
    assert len({c.name for c in cases}) == len(cases)
    oldest = datetime.now(UTC).timestamp() - 3600
    for number, case in enumerate(cases):
        path = landing.incoming / case.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case.data)
        os.utime(path, (oldest + number, oldest + number))
    (landing.incoming / ".hidden.csv").write_bytes(cases[0].data)
    (landing.incoming / "upload.csv.part").write_bytes(cases[0].data)
    secret = landing.root / "secret.csv"
    secret.write_bytes(cases[0].data)
    (landing.incoming / "link.csv").symlink_to(secret)
    os.mkfifo(landing.incoming / "pipe.csv")

    result = ingest_sensor_drops(build=False)

    ledger = {
        row[0]: row[1:]
        for row in query(
            "select file_name, id, status, rows_loaded, rows_quarantined, rows_conflict, "
            "rows_duplicate, coalesce(error, ''), array_to_string(warnings, ' | ') "
            "from raw.ingest_files"
        )
    }
    assert set(ledger) == {c.name for c in cases}
    problems = []
    for case in cases:
        file_id, status, loaded, quarantined, conflict, duplicate, error, warnings = ledger[
            case.name
        ]
        want = case.expect
        got = (status, loaded or 0, quarantined or 0, conflict or 0)
        if got != (want.status, want.loaded, want.quarantined, want.conflict):
            problems.append(f"{case.name}: {got} != {want} ({error})")
        if want.duplicate and duplicate != want.duplicate:
            problems.append(f"{case.name}: {duplicate} duplicates, expected {want.duplicate}")
        reasons = " | ".join(
            r[0]
            for r in query(
                "select array_to_string(reasons, ' ') from raw.quarantined_rows "
                "where ingest_file_id = %s",
                (file_id,),
            )
        )
        if want.says and want.says not in f"{error} | {warnings} | {reasons}":
            problems.append(f"{case.name}: says {error!r} / {warnings!r} / {reasons!r}")
    assert not problems, "\n".join(problems)

    assert result["files"] == len(cases)
    assert not list(landing.processing.iterdir())
    left = {p.relative_to(landing.incoming).as_posix() for p in landing.incoming.rglob("*")}
    assert {name for name in left if not (landing.incoming / name).is_dir()} == NEVER_CLAIMED
    assert {r[0] for r in query("select path from raw.landing_ignored")} == NEVER_CLAIMED
    assert secret.read_bytes() == cases[0].data  # the link's target was never read or moved

    stored = dict(query("select ingest_file_id, count(*) from raw.sensor_readings group by 1"))
    for case in cases:
        file_id, status, loaded, *_ = ledger[case.name]
        assert stored.get(file_id, 0) == (loaded or 0), case.name
    total = query("select count(*) from raw.sensor_readings")[0][0]
    assert total == sum(c.expect.loaded for c in cases)

    again = ingest_sensor_drops(build=False)
    assert again["files"] == 0
    assert query("select count(*) from raw.sensor_readings")[0][0] == total
