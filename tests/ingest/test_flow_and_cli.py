"""The real Prefect flow, the `emps ingest` / `emps quality` commands and the committed suite."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from emps.catalog import load_catalog
from emps.cli import app
from emps.ingest.landing import Landing
from emps.ingest.validate import SUITE_PATH, build_suite, suite_json
from emps.settings import get_settings
from tests.ingest.drop_files import Drops, csv_bytes, reading

runner = CliRunner()


def test_flow_loads_publishes_and_emits_events(
    prefect_server, drops: Drops, landing: Landing, ingest_db, query
):
    """The ingest-sensor-drops flow loads the drops, returns the equipment with new data, publishes a run table, emits loaded / quarantined events, logs a warning per file with a problem and one line for the clean ones, and says it is alive while it runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.events.filters import EventFilter, EventNameFilter

    from emps.flows.ingest import ingest_sensor_drops

    drops.csv("gen.csv", [reading("GEN-0001", minute=i) for i in range(3)])
    drops.csv("pmp.csv", [reading("PMP-0002", minute=1), reading("PMP-0002", minute=2, voltage=-5)])
    drops.put("broken.json", b"[{")
    task_logger = logging.getLogger("prefect.task_runs")  # the suite logs warnings only
    level = task_logger.level
    task_logger.setLevel(logging.INFO)
    try:
        result = ingest_sensor_drops(build=False)  # the feature build: tests/dbt
    finally:
        task_logger.setLevel(level)

    assert result["equipment_ids"] == ["GEN-0001", "PMP-0002"]
    assert result["rows_loaded"] == 4 and result["rows_quarantined"] == 1
    assert len(result["ingest_file_ids"]) == 2
    assert query("select count(*) from raw.sensor_readings") == [(4,)]

    [(run_id,)] = query("select distinct flow_run_id from raw.ingest_files")

    async def read() -> tuple[list, list, list]:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(event=EventNameFilter(prefix=["emps.ingest."])), limit=50
            )
            alive = await client.read_events(
                filter=EventFilter(event=EventNameFilter(name=["emps.ingest.alive"])), limit=50
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-run"]))
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            return page.events + alive.events, artifacts, logs

    def ours(event) -> bool:  # the session's other runs emit these events too
        if event.event == "emps.ingest.alive":
            return event.payload.get("flow_run_id") == run_id
        if event.event == "emps.ingest.loaded":
            return event.resource.id == f"emps.ingest.run.{run_id}"
        return event.resource.name == "broken.json"

    wanted = {"emps.ingest.loaded", "emps.ingest.file-quarantined", "emps.ingest.alive"}
    events, artifacts, logs = [], [], []
    deadline = time.monotonic() + 60  # events and logs reach the server asynchronously
    while time.monotonic() < deadline and not (
        wanted <= {e.event for e in events} and any("cleanly" in r.message for r in logs)
    ):
        time.sleep(1)
        events, artifacts, logs = asyncio.run(read())
        events = [e for e in events if ours(e)]
    by_name: dict = {}
    for event in events:  # newest first
        by_name.setdefault(event.event, event)
    loaded = by_name["emps.ingest.loaded"]
    assert loaded.payload["equipment_count"] == 2
    assert loaded.payload["ingest_file_ids"] == result["ingest_file_ids"]
    quarantined = by_name["emps.ingest.file-quarantined"]
    assert quarantined.resource.name == "broken.json"
    assert "JSON" in quarantined.payload["reason"]
    assert any("broken\\.json" in (a.data or "") for a in artifacts)
    # The flow run's log: a warning per file with a problem, one line for the clean ones.
    warned = {json.loads(r.message)["file"] for r in logs if r.level == logging.WARNING}
    assert warned == {"pmp.csv", "broken.json"}
    assert [r.message for r in logs if "cleanly" in r.message] == ["1 file loaded cleanly: gen.csv"]
    # The run said it was alive (the safety-net trigger waits), and its heartbeat is gone.
    assert by_name["emps.ingest.alive"].resource.id == "emps.landing.incoming"
    assert not (landing.root / ".ingest-run.json").exists()


def test_a_storm_of_bad_files_gets_bounded_events_and_log_lines(
    prefect_server, drops: Drops, ingest_db, query
):
    """A gateway sending hundreds of broken files must not flood the Prefect server: the first
    MAX_FILE_EVENTS of a batch get their own event and warning, the rest one event and one line
    that count them; every file is still in the ledger."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    from emps.flows.ingest import MAX_FILE_EVENTS, ingest_sensor_drops

    extra = 7
    started = datetime.now(UTC) - timedelta(seconds=5)
    for i in range(MAX_FILE_EVENTS + extra):
        drops.put(f"broken-{i:03d}.json", b"[{")
    ingest_sensor_drops(build=False)
    [(run_id, files)] = query(
        "select flow_run_id, count(*) from raw.ingest_files where status = 'quarantined' group by 1"
    )
    assert files == MAX_FILE_EVENTS + extra

    async def read() -> tuple[list, list]:
        async with get_client() as client:
            pages = [
                await client.read_events(
                    filter=EventFilter(
                        event=EventNameFilter(name=[name]),
                        occurred=EventOccurredFilter(since=started),
                    ),
                    limit=50,
                )
                for name in ("emps.ingest.file-quarantined", "emps.ingest.files-quarantined")
            ]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            return [e for page in pages for e in page.events], logs

    def ours(event) -> bool:  # the session's other runs emit these events too
        name = event.resource.name or ""
        return name.startswith("broken-") or event.resource.id == f"emps.ingest.run.{run_id}"

    events, logs = [], []
    deadline = time.monotonic() + 60  # events and logs reach the server asynchronously
    while time.monotonic() < deadline and not (
        any(e.event == "emps.ingest.files-quarantined" for e in events)
        and sum(e.event == "emps.ingest.file-quarantined" for e in events) >= MAX_FILE_EVENTS
        and any("more file" in r.message for r in logs)
    ):
        time.sleep(1)
        events, logs = asyncio.run(read())
        events = [e for e in events if ours(e)]
    per_file = [e for e in events if e.event == "emps.ingest.file-quarantined"]
    [summary] = [e for e in events if e.event == "emps.ingest.files-quarantined"]
    assert len(per_file) == MAX_FILE_EVENTS
    assert summary.payload["files"] == extra and len(summary.payload["ingest_file_ids"]) == extra
    assert len([r for r in logs if r.message.startswith("{")]) == MAX_FILE_EVENTS
    assert [r.message for r in logs if "more file" in r.message] == [
        f"{extra} more file(s) not loaded cleanly ({extra} quarantined): see raw.ingest_files"
    ]


def test_cli_ingests_files_and_folders(tmp_path: Path, landing: Landing, ingest_db, query):
    """`emps ingest PATH` copies a file or a folder into the landing zone and ingests it now."""
    folder = tmp_path / "drops"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_bytes(csv_bytes([reading(minute=1)]))
    (folder / "sub" / "b.csv").write_bytes(csv_bytes([reading(minute=2)]))
    (folder / "c.csv.part").write_bytes(csv_bytes([reading(minute=3)]))
    single = tmp_path / "single.csv"
    single.write_bytes(csv_bytes([reading(minute=4)]))

    done = runner.invoke(
        app, ["ingest", str(folder), str(folder / "sub" / ".." / ".." / "single.csv")]
    )
    assert done.exit_code == 0, done.output
    assert "3 files: 3 readings loaded" in " ".join(done.output.split())
    assert "predictions follow with the platform's next build" in " ".join(done.output.split())
    assert query("select count(*) from raw.sensor_readings") == [(3,)]
    assert single.exists() and (folder / "a.csv").exists()  # the user's files are left alone

    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in " ".join(missing.output.split())


def test_cli_exit_code_flags_quarantined_files(tmp_path: Path, landing: Landing, ingest_db):
    """`emps ingest` exits 1 when a file was quarantined, so scripts notice."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"")
    done = runner.invoke(app, ["ingest", str(bad)])
    assert done.exit_code == 1
    assert "empty" in " ".join(done.output.split())


def test_quality_docs_builds_a_site(drops: Drops, landing: Landing, ingest_db):
    """`emps quality docs` renders Great Expectations Data Docs from the ingest validations."""
    drops.csv("gen.csv", [reading(minute=i) for i in range(3)] + [reading(minute=9, voltage=5000)])
    assert runner.invoke(app, ["ingest"]).exit_code == 0
    done = runner.invoke(app, ["quality", "docs"])
    assert done.exit_code == 0, done.output
    index = ingest_db.home / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.exists()
    assert "sensor_readings" in index.read_text()


def test_committed_suite_matches_the_catalog(ingest_db):
    """expectations/sensor_readings.json is what the catalog generates (`emps quality suite` agrees)."""
    assert SUITE_PATH.read_text() == suite_json(load_catalog())
    assert runner.invoke(app, ["quality", "suite"]).exit_code == 0


def test_suite_follows_the_catalog(extra_sensor_catalog: Path):
    """A sensor added to the catalog gets its own range expectation in the generated suite."""
    suite = build_suite(load_catalog(extra_sensor_catalog))
    ranges = {
        e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] != "ts"
    }
    assert ranges["oil_quality"] == (0.0, 5000.0)
    assert json.loads(json.dumps(suite)) == suite


def test_flow_keeps_ingesting_until_incoming_is_empty(
    prefect_server, drops: Drops, ingest_db, query, monkeypatch
):
    """Files beyond one batch (or arriving while a run works) are ingested by the same run, since
    a run their own event would start is cancelled while this one is busy; the loop is bounded
    by ingest_loop_max_s (0 = one batch)."""
    from emps.flows.ingest import ingest_sensor_drops

    for i in range(3):
        drops.csv(f"dev-{i}.csv", [reading("GEN-0001", minute=i)])
    result = ingest_sensor_drops(limit=1, build=False)
    assert result["files"] == 3 and result["rows_loaded"] == 3

    # The flow reads the process-wide settings, which an earlier test may have rebuilt.
    monkeypatch.setattr(get_settings().ingest, "loop_max_s", 0)
    for i in range(3, 5):
        drops.csv(f"dev-{i}.csv", [reading("GEN-0001", minute=i)])
    assert ingest_sensor_drops(limit=1, build=False)["files"] == 1
    assert query("select count(*) from raw.sensor_readings") == [(4,)]


def test_a_run_lingers_for_the_next_drops_then_ends(
    prefect_server, drops: Drops, ingest_db, query, monkeypatch
):
    """Once incoming/ is empty a run waits EMPS_INGEST_LINGER_S for more files and ingests a
    file dropped meanwhile itself (a warm process for the next minute's drops), then ends."""
    from emps.flows.ingest import ingest_sensor_drops

    monkeypatch.setattr(get_settings().ingest, "linger_s", 5)
    monkeypatch.setattr(get_settings().ingest, "watch_poll_s", 0.2)
    drops.csv("first.csv", [reading("GEN-0001", minute=1)])

    def drop_after_first_loaded() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not query(
            "select 1 from raw.ingest_files where file_name = 'first.csv' and status = 'loaded'"
        ):
            time.sleep(0.1)
        drops.csv("later.csv", [reading("GEN-0001", minute=2)])

    dropper = threading.Thread(target=drop_after_first_loaded)
    dropper.start()
    result = ingest_sensor_drops(build=False)
    dropper.join()
    assert result["files"] == 2 and result["rows_loaded"] == 2
    assert query("select count(distinct flow_run_id) from raw.ingest_files") == [(1,)]


def test_the_feature_build_notices_readings_that_loaded_while_it_ran(ingest_db, drops, query):
    """build-features builds again when readings loaded during its build: from a file newer than
    its start, or from one that was still loading when it began (and so invisible to it)."""
    from emps.ingest.pipeline import ingest_landing
    from emps.transform import ledger_mark, loaded_since

    drops.csv("first.csv", [reading("GEN-0001", minute=1)])
    ingest_landing(ingest_db)
    mark = ledger_mark(ingest_db)
    assert not loaded_since(mark, ingest_db)
    drops.csv("second.csv", [reading("GEN-0001", minute=2)])
    ingest_landing(ingest_db)
    assert loaded_since(mark, ingest_db)

    query(
        "insert into raw.ingest_files (file_name, sha256, size_bytes, received_at) "
        "values ('slow.csv', 'slow', 1, now()) returning id"
    )
    drops.csv("third.csv", [reading("GEN-0001", minute=3)])
    ingest_landing(ingest_db)  # a newer file loads while slow.csv is still being loaded
    mark = ledger_mark(ingest_db)
    assert not loaded_since(mark, ingest_db)
    query("update raw.ingest_files set status = 'loaded' where file_name = 'slow.csv' returning id")
    assert loaded_since(mark, ingest_db)


def test_the_run_table_shows_hostile_names_and_errors_as_plain_text():
    """File names and errors with Markdown, HTML, pipes and control characters cannot change the
    run table's layout or add links, styling or markup."""
    from emps.flows.ingest import run_markdown
    from emps.ingest.pipeline import FileOutcome, IngestReport

    name = "x|y [a](http:evil) <script>alert(1)</script>\n# header\x1b[31m\u202e.csv"
    outcome = FileOutcome(1, name, "s", status="quarantined", error="**bold** | `code`\r\nnext")
    table = run_markdown(IngestReport("run", files=[outcome]))
    row = table.splitlines()[-1]
    assert row.count(" | ") == 7  # the table's own separators only
    assert "[a](" not in row and "<script>" not in row and "**bold**" not in row
    assert "\\u000a" in row and "\\u001b" in row and "\\u202e" in row
    assert "\n" not in row and "\x1b" not in row


def test_a_paused_run_looks_once_and_ends_leaving_the_drops_waiting(
    prefect_server, drops: Drops, landing: Landing, ingest_db, query, monkeypatch
):
    """Below EMPS_INGEST_MIN_FREE_MB the flow run claims nothing and ends after one look (the
    next scheduled run looks again) instead of looking every second for its whole loop: the
    file waits in incoming/ and the result says why."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from emps.flows.ingest import ingest_sensor_drops

    settings = get_settings()
    monkeypatch.setattr(settings.ingest, "min_free_mb", 1 << 40)  # more than any disk has
    monkeypatch.setattr(settings.ingest, "loop_max_s", 30)
    monkeypatch.setattr(settings.ingest, "watch_poll_s", 0.2)
    drops.put("waiting.csv", b"never read while the disk is full\n")
    state = ingest_sensor_drops(build=False, return_state=True)
    result = state.result()
    assert result["files"] == 0
    assert "under EMPS_INGEST_MIN_FREE_MB" in result["paused"]
    assert [p.name for p in landing.incoming.iterdir()] == ["waiting.csv"]
    assert query("select count(*) from raw.ingest_files") == [(0,)]

    async def looks() -> int:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
            return sum(run.name.startswith("ingest-drop-files") for run in runs)

    assert asyncio.run(looks()) == 1


def test_cli_says_ingest_is_paused_and_exits_1(
    drops: Drops, landing: Landing, ingest_db, monkeypatch
):
    """`emps ingest` below EMPS_INGEST_MIN_FREE_MB says ingest is paused and that the files
    wait, and exits 1, instead of "nothing to ingest"."""
    monkeypatch.setattr(get_settings().ingest, "min_free_mb", 1 << 40)
    drops.put("waiting.csv", b"never read while the disk is full\n")
    done = runner.invoke(app, ["ingest"])
    said = " ".join(done.output.split())
    assert done.exit_code == 1, done.output
    assert (
        "ingest paused" in said and "EMPS_INGEST_MIN_FREE_MB" in said and "nothing is lost" in said
    )
    assert "nothing to ingest" not in said
    assert [p.name for p in landing.incoming.iterdir()] == ["waiting.csv"]
