"""Every bad input a device can drop: good readings load once, bad ones are quarantined with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.ingest.pipeline import ingest_landing
from emps.settings import Settings
from tests.ingest.drop_files import (
    BASE_TS,
    Drops,
    csv_bytes,
    gz,
    json_bytes,
    ndjson_bytes,
    reading,
)


def readings_count(query) -> int:
    return query("select count(*) from raw.sensor_readings")[0][0]


def quarantined(query) -> list[tuple[int, list[str], dict]]:
    return query(
        "select row_number, reasons, raw_values from raw.quarantined_rows order by id",
    )


def reason_files(landing: Landing) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(landing.quarantine.glob("*.reason.json"))]


def ledger(query) -> list[tuple]:
    return query(
        "select file_name, status, rows_total, rows_loaded, rows_duplicate, rows_quarantined, "
        "error from raw.ingest_files order by id"
    )


def assert_file_quarantined(landing: Landing, query, says: str) -> None:
    notes = reason_files(landing)
    assert len(notes) == 1, notes
    assert says in notes[0]["reason"]
    assert [p.name for p in landing.quarantine.iterdir() if not p.name.endswith(".reason.json")]
    assert readings_count(query) == 0
    assert ledger(query)[0][1] == "quarantined"
    assert not list(landing.processing.iterdir())


def test_good_file_loads_and_is_archived(drops: Drops, landing: Landing, ingest_db, query):
    """A clean CSV loads every reading once, is archived under YYYY/MM/DD and ledgered as loaded."""
    drops.csv("gen.csv", [reading("GEN-0001", minute=i) for i in range(10)])
    report = ingest_landing(ingest_db)
    assert readings_count(query) == 10
    assert report.equipment_ids == {"GEN-0001"}
    assert ledger(query)[0][:4] == ("gen.csv", "loaded", 10, 10)
    today = datetime.now(UTC)
    archived = list((landing.archive / f"{today:%Y/%m/%d}").iterdir())
    assert len(archived) == 1 and archived[0].name.endswith("gen.csv")
    assert not list(landing.incoming.iterdir()) and not list(landing.processing.iterdir())


def test_empty_file_is_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """An empty file goes to quarantine/ with a reason file saying it is empty."""
    drops.put("empty.csv", b"")
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "empty")


def test_header_only_file_is_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """A CSV with a header and no rows is quarantined as having no readings."""
    drops.put("header.csv", b"equipment_id,timestamp,temperature,vibration\n")
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "no readings")


def test_truncated_csv_keeps_the_complete_rows(drops: Drops, landing: Landing, ingest_db, query):
    """A CSV cut mid-row loads the complete rows and quarantines the cut one as unterminated,
    its text kept."""
    data = csv_bytes([reading(minute=i) for i in range(3)])
    cut = data + f"GEN-0001,{(BASE_TS + timedelta(minutes=5)).isoformat()},80".encode()
    drops.put("cut.csv", cut)
    ingest_landing(ingest_db)
    assert readings_count(query) == 3
    [(row_number, reasons, raw)] = quarantined(query)
    assert row_number == 4
    assert reasons[0].startswith("unterminated: the file ends inside this row")
    assert raw["_line"].endswith(",80")
    assert query("select kind from raw.quarantined_rows") == [("unterminated",)]
    assert ledger(query)[0][1] == "partial"


def test_csv_cut_inside_quotes_keeps_the_rows_before(
    drops: Drops, landing: Landing, ingest_db, query
):
    """A CSV that ends inside a quoted field loads the rows before it; the open row is
    quarantined as unterminated."""
    drops.put("quote.csv", csv_bytes([reading()]) + b'"GEN-0002,2026-01-01')
    ingest_landing(ingest_db)
    assert readings_count(query) == 1
    assert query("select kind, raw_values->>'_line' from raw.quarantined_rows") == [
        ("unterminated", '"GEN-0002,2026-01-01')
    ]


def test_semicolon_csv_with_decimal_commas_loads(drops: Drops, landing: Landing, ingest_db, query):
    """A semicolon-separated file is read by its header, its decimal commas as decimals."""
    row = reading()
    text = csv_bytes([row], delimiter=";").decode().replace("80.5", "80,5").replace("3.25", "3,25")
    drops.put("semi.csv", text.encode())
    ingest_landing(ingest_db)
    assert query("select temperature, vibration from raw.sensor_readings") == [(80.5, 3.25)]
    assert query("select format from raw.ingest_files") == [("csv-semicolon",)]


def test_unknown_delimiter_says_so(drops: Drops, landing: Landing, ingest_db, query):
    """A file split by a character ingest does not read as a delimiter is refused naming the
    columns it could not find."""
    drops.put("colon.csv", csv_bytes([reading()], delimiter=":"))
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "delimiter other than")


def test_non_utf8_rows_are_quarantined_alone(drops: Drops, landing: Landing, ingest_db, query):
    """A row that is not UTF-8 is quarantined naming the byte; the UTF-8 rows of the file load."""
    good = csv_bytes([reading()]).decode().splitlines()[1]
    header = "equipment_id,timestamp,temperature,vibration"
    data = f"{header}\n{good.rsplit(',', 3)[0]}\nGÉN,x,1,1\n".encode("latin-1")
    drops.put("latin1.csv", data)
    ingest_landing(ingest_db)
    assert readings_count(query) == 1
    [(row, reasons, _)] = quarantined(query)
    assert row == 2 and "not UTF-8 text (byte 0xc9" in reasons[0]


def test_non_utf8_header_quarantines_the_file(drops: Drops, landing: Landing, ingest_db, query):
    """A header that is not UTF-8 cannot be mapped to columns: the file is quarantined."""
    drops.put("latin1.csv", "équipement,timestamp\nA,1\n".encode("latin-1"))
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "not UTF-8")


def test_invalid_json_is_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """A JSON array with a syntax error is quarantined with the position of the error."""
    drops.put("bad.json", b'[{"equipment_id": "GEN-0001", "timestamp": }]')
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "not valid JSON (Expecting value at character 44)")


def test_json_of_the_wrong_shape_is_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """A JSON object wrapping the readings is quarantined: the required columns are missing."""
    drops.put("wrapped.json", json.dumps({"readings": [reading()]}).encode())
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "required column(s) equipment_id, timestamp")


def test_numbers_as_strings_are_accepted(drops: Drops, landing: Landing, ingest_db, query):
    """JSON numbers sent as strings ("80.5") load as numbers."""
    drops.put("strings.json", json_bytes([reading(temperature="80.5", vibration=" 3.5")]))
    ingest_landing(ingest_db)
    assert query("select temperature, vibration from raw.sensor_readings") == [(80.5, 3.5)]


def test_nan_inf_and_empty_strings(drops: Drops, landing: Landing, ingest_db, query):
    """NaN and inf are quarantined as not numbers; an empty optional sensor loads as null."""
    rows = [
        reading(minute=1, temperature="NaN"),
        reading(minute=2, vibration="inf"),
        reading(minute=3, pressure=""),
        reading(minute=4, temperature=""),
    ]
    drops.put("nan.ndjson", ndjson_bytes(rows))
    ingest_landing(ingest_db)
    assert query("select pressure from raw.sensor_readings") == [(None,)]
    reasons = {row: r for row, r, _ in quarantined(query)}
    assert "temperature value 'NaN' is not a number" in reasons[1][0]
    assert "vibration value 'inf' is not a number" in reasons[2][0]
    assert "temperature is required but missing" in reasons[4][0]


def test_out_of_range_values_are_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """A reading outside its sensor's valid range is quarantined naming the field, value and range."""
    drops.csv("range.csv", [reading(minute=0), reading(minute=1, voltage=5000)])
    ingest_landing(ingest_db)
    assert readings_count(query) == 1
    [(_, reasons, raw)] = quarantined(query)
    assert reasons[0].startswith("voltage value 5000 is outside the valid range 0..1000 V")
    assert raw["voltage"] == "5000"
    status, error = query("select status, error from raw.ingest_files")[0]
    assert status == "partial"
    assert "voltage" in error


def test_duplicate_rows_in_a_file(drops: Drops, landing: Landing, ingest_db, query):
    """An exact repeat in a file counts as a duplicate; two different values for one timestamp are quarantined."""
    rows = [
        reading(minute=0),
        reading(minute=0),
        reading(minute=1, temperature=70),
        reading(minute=1, temperature=71),
    ]
    drops.csv("dups.csv", rows)
    ingest_landing(ingest_db)
    assert readings_count(query) == 1
    assert sorted(r[0] for r in quarantined(query)) == [3, 4]
    assert "more than one different reading" in quarantined(query)[0][1][0]
    assert ledger(query)[0][2:6] == (4, 1, 1, 2)


def test_same_file_twice_is_a_duplicate(drops: Drops, landing: Landing, ingest_db, query):
    """The same bytes dropped twice (in one run or two) load once; the copies are ledgered as duplicates."""
    data = csv_bytes([reading(minute=i) for i in range(5)])
    drops.put("a.csv", data)
    drops.put("a-again.csv", data)
    ingest_landing(ingest_db)
    drops.put("a-third.csv", data)
    ingest_landing(ingest_db)
    assert readings_count(query) == 5
    assert [row[1] for row in ledger(query)] == ["loaded", "duplicate", "duplicate"]


def test_same_readings_in_two_files(drops: Drops, landing: Landing, ingest_db, query):
    """Readings re-sent in a different file are counted as duplicates, not errors, and stored once."""
    drops.csv("first.csv", [reading(minute=i) for i in range(3)])
    ingest_landing(ingest_db)
    drops.csv("second.csv", [reading(minute=i) for i in range(5)], columns=None)
    ingest_landing(ingest_db)
    assert readings_count(query) == 5
    second = ledger(query)[1]
    assert second[1:6] == ("loaded", 5, 2, 3, 0)


def test_future_and_very_old_timestamps(drops: Drops, landing: Landing, ingest_db, query):
    """Readings beyond the future tolerance or older than retention are quarantined with the reason."""
    now = datetime.now(UTC)
    rows = [
        reading(timestamp=(now + timedelta(hours=2)).isoformat()),
        reading(timestamp=(now - timedelta(days=3000)).isoformat()),
        reading(timestamp=(now - timedelta(minutes=1)).isoformat()),
    ]
    drops.put("times.json", json_bytes(rows))
    ingest_landing(ingest_db)
    assert readings_count(query) == 1
    reasons = [r[1][0] for r in quarantined(query)]
    assert "minutes in the future" in reasons[0]
    assert "retention period" in reasons[1]


def test_epoch_seconds_and_offsets(drops: Drops, landing: Landing, ingest_db, query):
    """Epoch seconds and ISO-8601 with any offset are stored as the same UTC instant."""
    instant = BASE_TS.replace(microsecond=0)
    rows = [
        reading("GEN-0001", timestamp=str(int(instant.timestamp()))),
        reading("GEN-0002", timestamp=instant.astimezone(UTC).isoformat().replace("+00:00", "Z")),
        reading(
            "GEN-0003",
            timestamp=instant.astimezone(
                __import__("datetime").timezone(timedelta(hours=5, minutes=30))
            ).isoformat(),
        ),
    ]
    drops.csv("times.csv", rows)
    ingest_landing(ingest_db)
    assert {r[0] for r in query("select ts from raw.sensor_readings")} == {instant}


def test_naive_timestamps_follow_the_setting(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """Timestamps without an offset are quarantined by default and taken as UTC when the setting says so."""
    naive = BASE_TS.replace(tzinfo=None).isoformat()
    drops.csv("naive.csv", [reading(timestamp=naive)])
    ingest_landing(ingest_db)
    [(_, reasons, _)] = quarantined(query)
    assert "has no UTC offset" in reasons[0]
    drops.csv("naive-again.csv", [reading(minute=1, timestamp=naive)])
    ingest_landing(ingest_db.replace(ingest={"naive_timestamps_utc": True}))
    assert query("select ts from raw.sensor_readings") == [(BASE_TS,)]


def test_unknown_equipment_follows_the_setting(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """Unknown equipment is quarantined by default, auto-registered when the setting says so."""
    drops.csv("new.csv", [reading("RAD-0042")])
    ingest_landing(ingest_db)
    [(_, reasons, _)] = quarantined(query)
    assert "'RAD-0042' is not registered" in reasons[0]
    drops.csv("new-again.csv", [reading("RAD-0042", minute=1)])
    report = ingest_landing(ingest_db.replace(ingest={"unknown_equipment": "register"}))
    assert report.registered_equipment == ["RAD-0042"]
    assert query(
        "select equipment_type, source from raw.equipment where equipment_id = 'RAD-0042'"
    ) == [("radar", "ingest")]
    assert readings_count(query) == 1


def test_invalid_equipment_ids_are_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """An equipment id with characters outside the allowed set is quarantined, never registered."""
    drops.csv("ids.csv", [reading("GEN 0001; drop table"), reading(equipment_id=None)])
    ingest_landing(ingest_db.replace(ingest={"unknown_equipment": "register"}))
    reasons = [r[1] for r in quarantined(query)]
    assert any("is not a valid id" in r for r in reasons[0])
    assert any("equipment_id is missing" in r for r in reasons[1])
    assert query("select count(*) from raw.equipment where source = 'ingest'") == [(0,)]


def test_corrupt_gzip_is_quarantined(drops: Drops, landing: Landing, ingest_db, query):
    """A gzip file cut short is quarantined as corrupt, nothing of it loaded."""
    data = gz(csv_bytes([reading(minute=i) for i in range(200)]))
    drops.put("cut.csv.gz", data[: len(data) // 2])
    ingest_landing(ingest_db)
    assert_file_quarantined(landing, query, "gzip")


def test_hostile_file_names_stay_inside_the_landing_zone(
    drops: Drops, landing: Landing, ingest_db, query
):
    """Names with '..', spaces, unicode and shell characters are stored safely; the ledger keeps the original."""
    names = ["x..\\..\\evil.csv", "my drop $(rm -rf).csv", "démarrage ünïcode 温度.csv"]
    for minute, name in enumerate(names):
        drops.csv(name, [reading(minute=minute)])
    ingest_landing(ingest_db)
    assert readings_count(query) == 3
    assert sorted(r[0] for r in ledger(query)) == sorted(names)
    stored = [p for p in landing.archive.rglob("*") if p.is_file()]
    assert len(stored) == 3
    for path in stored:
        assert path.resolve().is_relative_to(landing.root.resolve())
        assert path.name.isascii() and " " not in path.name and "$" not in path.name


def test_files_still_being_written_are_not_picked_up(
    drops: Drops, landing: Landing, ingest_db, query
):
    """Dot files and *.part / *.tmp names wait in incoming/ until the writer renames them."""
    for name in [".hidden.csv", "drop.csv.part", "drop.tmp"]:
        drops.csv(name, [reading()])
    report = ingest_landing(ingest_db)
    assert report.files == []
    assert readings_count(query) == 0
    assert len(list(landing.incoming.iterdir())) == 3


def test_ndjson_bad_line_does_not_block_the_others(
    drops: Drops, landing: Landing, ingest_db, query
):
    """A broken NDJSON line is quarantined with its text; the lines around it load."""
    data = (
        ndjson_bytes([reading(minute=0)])
        + b'{"equipment_id": "GEN-0001", \n'
        + ndjson_bytes([reading(minute=2)])
    )
    drops.put("lines.ndjson", data)
    ingest_landing(ingest_db)
    assert readings_count(query) == 2
    [(row, reasons, raw)] = quarantined(query)
    assert row == 2 and "not valid JSON" in reasons[0]
    assert raw["_line"].startswith('{"equipment_id"')


def test_many_small_files_are_validated_as_one_batch(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """300 one-reading files (one per device) load in one run with a single validation batch."""
    results = ingest_db.home / "gx" / "results"
    before = len(list(results.glob("*.json"))) if results.exists() else 0
    for i in range(300):
        drops.csv(f"dev-{i:04d}.csv", [reading(f"GEN-{i % 5 + 1:04d}", minute=i)])
    report = ingest_landing(ingest_db.replace(ingest={"keep_validations": 10_000}))
    assert report.total("rows_loaded") == 300
    assert len(list(results.glob("*.json"))) == before + 1


def test_garbage_timestamps_are_named_as_such(drops: Drops, landing: Landing, ingest_db, query):
    """A timestamp that is not a date at all is reported as unreadable, not as a missing offset."""
    drops.csv(
        "garbage.csv", [reading(timestamp="2026-13-45T25:61:00"), reading(timestamp="yesterday")]
    )
    ingest_landing(ingest_db)
    reasons = [r[1][0] for r in quarantined(query)]
    assert "'2026-13-45T25:61:00' is not a real date and time" in reasons[0]
    assert "'yesterday' is not an ISO-8601 date and time" in reasons[1]


def test_repeat_of_a_quarantined_file_is_quarantined_too(
    drops: Drops, landing: Landing, ingest_db, query
):
    """Two identical unreadable files in one run are both quarantined: neither is a duplicate of a loaded file."""
    drops.put("first.json", b"[{")
    drops.put("second.json", b"[{")
    ingest_landing(ingest_db)
    assert [row[1] for row in ledger(query)] == ["quarantined", "quarantined"]
    assert len(reason_files(landing)) == 2


def test_the_ingest_counters_count_each_file_once_and_never_go_down(drops: Drops, ingest_db, query):
    """The Prometheus ingest counters add what each file did (readings loaded, rows and files
    quarantined, duplicate files), once, and keep it when the ledger's rows are pruned."""
    from emps.metrics import PlatformCollector

    def counters() -> dict[str, float]:
        names = ("readings_ingested", "rows_quarantined", "files_quarantined", "files_duplicate")
        samples = {
            sample.name: sample.value
            for family in PlatformCollector(ingest_db).collect()
            for sample in family.samples
        }
        return {name: samples[f"emps_{name}_total"] for name in names}

    before = counters()
    good = [reading("GEN-0001", minute=i) for i in range(10)]
    drops.csv("good.csv", good)
    drops.csv(
        "half.csv", [reading("GEN-0002", minute=0), reading("GEN-0002", minute=1, vibration=-9)]
    )
    drops.put("empty.csv", b"")
    ingest_landing(ingest_db)
    drops.csv("again.csv", good)  # the same content again: a duplicate file
    ingest_landing(ingest_db)
    added = {name: value - before[name] for name, value in counters().items()}
    assert added == {
        "readings_ingested": 11,
        "rows_quarantined": 1,
        "files_quarantined": 1,
        "files_duplicate": 1,
    }
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        conn.execute("delete from raw.quarantined_rows")
        conn.execute("delete from raw.ingest_files")  # a ledger pruned by retention
    assert {name: value - before[name] for name, value in counters().items()} == added
