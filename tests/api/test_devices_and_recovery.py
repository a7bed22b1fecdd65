"""Device keys from the CLI, the API role's reach, and readings surviving a killed API."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest
from api_support import start_api, wait_for
from typer.testing import CliRunner

from emps.api.drops import recover
from emps.cli import app
from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.processes import free_port

INGEST = "/api/v1/sensors/ingest"


def test_devices_add_prints_the_key_once_and_list_shows_only_its_prefix(api_db, fleet):
    """`emps devices add` prints a key the API accepts; `list` shows its prefix, not the key,
    and the database holds only its hash."""
    runner = CliRunner()
    added = runner.invoke(app, ["devices", "add", "cli-dev-1", "-e", fleet.equipment[0]])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("emps_dev_")
    listed = runner.invoke(app, ["devices", "list"])
    assert key.split("_")[2] in listed.stdout and key not in listed.stdout
    with connect(Role.OWNER, api_db) as conn:
        stored = conn.execute(
            "select key_sha256 from ops.device_keys where device_id = 'cli-dev-1'"
        ).fetchall()
        audit = conn.execute(
            "select action from ops.audit_log where target_id = 'cli-dev-1'"
        ).fetchall()
    assert len(stored) == 1 and key.encode() not in bytes(stored[0][0])
    assert audit == [("device.add",)]
    third = runner.invoke(app, ["devices", "rotate", "cli-dev-1"])
    assert third.exit_code == 0
    refused = runner.invoke(app, ["devices", "rotate", "cli-dev-1"])
    # The message may wrap at the terminal width.
    assert refused.exit_code == 1 and "already has 2 live keys" in " ".join(refused.output.split())


def test_the_api_role_reaches_keys_only_through_its_functions(api_db):
    """emps_api cannot read the key table; the reader cannot either."""
    for role in (Role.API, Role.READER):
        with connect(role, api_db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select key_sha256 from ops.device_keys").fetchall()


def test_readings_accepted_before_the_api_is_killed_reach_ingest(api_db, fleet, device, tmp_path):
    """Every reading answered 202 by an API killed with SIGKILL is handed to ingest by the
    next start, and its torn last line (never answered) is cut off."""
    dev = device()
    os.environ["EMPS_API_DROP_INTERVAL_S"] = "60"  # the file is still open when the API dies
    try:
        server = start_api(api_db, free_port(), tmp_path / "api.log")
    finally:
        del os.environ["EMPS_API_DROP_INTERVAL_S"]
    with server.client(dev.key) as client:
        ids = [
            client.post(INGEST, json=fleet.reading(dev.equipment[0], m)).json()["id"]
            for m in range(3)
        ]
    folder = api_db.landing_dir / "incoming" / dev.device_id
    partials = list(folder.glob(".api-*.part"))
    assert len(partials) == 1 and not list(folder.glob("api-*.ndjson"))
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    with partials[0].open("ab") as torn:
        torn.write(b'{"equipment_id": "' + dev.equipment[0].encode())
    assert recover(Landing(api_db.landing_dir)) == 1
    (handed,) = list(folder.glob("api-*.ndjson"))
    lines = handed.read_text().splitlines()
    assert len(lines) == 3 and handed.read_text().endswith("\n")
    assert len(set(ids)) == 3
    handed.unlink()  # not for the other tests' ingest runs


def test_a_live_writers_file_is_left_alone_by_recovery(api, api_db, fleet, device):
    """Recovery does not take a file another API process is still writing (it holds a lock)."""
    import fcntl

    dev = device()
    folder = api_db.landing_dir / "incoming" / dev.device_id
    folder.mkdir(parents=True)
    partial = folder / ".api-20260101T000000Z-0a0b0c0d.ndjson.part"
    partial.write_text('{"a": 1}\n')
    with partial.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert recover(Landing(api_db.landing_dir)) == 0
        assert partial.exists()
    assert recover(Landing(api_db.landing_dir)) == 1
    wait_for(lambda: not partial.exists(), what="the file renamed")
