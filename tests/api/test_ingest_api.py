"""POST /api/v1/sensors/ingest against the real service: keys, refusals, durability, status."""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from api_support import wait_for

from emps.api.devices import revoke, rotate_key
from emps.db import Role, connect
from emps.ingest.pipeline import ingest_landing

INGEST = "/api/v1/sensors/ingest"


def drop_file(settings, body: dict) -> str:
    """Wait until the request's drop file is handed to incoming/; its name there."""
    path = settings.landing_dir / "incoming" / body["file"]
    wait_for(path.exists, what=f"{body['file']} renamed into incoming/")
    return body["file"]


def status_of(client, request_id: str) -> dict:
    answer = client.get(f"{INGEST}/{request_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def ingest_request(settings, client, request_id: str) -> dict:
    """Run ingest (the function the flows call) once the request's file is in place."""
    status = status_of(client, request_id)
    if status["status"] == "accepted":
        drop_file(settings, status)
        ingest_landing(settings)
    return status_of(client, request_id)


def stored(settings, equipment_ids: list[str]) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select equipment_id, ts from raw.sensor_readings where equipment_id = any(%s) "
            "order by equipment_id, ts",
            (equipment_ids,),
        ).fetchall()


def test_a_single_reading_is_accepted_then_loaded_by_ingest(api, api_db, fleet, device):
    """One JSON reading gets 202 and an id whose status turns to loaded once ingest runs."""
    dev = device()
    reading = fleet.reading(dev.equipment[0], 30)
    with api.client(dev.key) as client:
        answer = client.post(INGEST, json=reading)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["status"] == "accepted" and body["readings"] == 1
        assert answer.headers["location"] == f"{INGEST}/{body['id']}"
        assert status_of(client, body["id"])["status"] == "accepted"
        final = ingest_request(api_db, client, body["id"])
    assert final["status"] == "loaded", final
    assert final["file"].startswith(f"{dev.device_id}/")
    stored_at = [ts.isoformat() for _, ts in stored(api_db, [dev.equipment[0]])]
    assert datetime.fromisoformat(reading["timestamp"]).isoformat() in stored_at


def test_a_batch_and_ndjson_are_accepted_and_all_readings_load(api, api_db, fleet, device):
    """A JSON array and an NDJSON body are each accepted whole and every reading loads."""
    dev = device()
    batch = [fleet.reading(dev.equipment[0], m) for m in range(3)]
    lines = [fleet.reading(dev.equipment[1], m) for m in range(2)]
    with api.client(dev.key) as client:
        first = client.post(INGEST, json=batch)
        second = client.post(
            INGEST,
            content="".join(json.dumps(r) + "\n" for r in lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert (first.status_code, second.status_code) == (202, 202), second.text
        assert (first.json()["readings"], second.json()["readings"]) == (3, 2)
        assert ingest_request(api_db, client, first.json()["id"])["status"] == "loaded"
        assert ingest_request(api_db, client, second.json()["id"])["status"] == "loaded"
    assert len(stored(api_db, dev.equipment)) == 5


def test_requests_without_a_valid_key_are_refused(api, api_db, fleet, device):
    """No key, a made-up key and a malformed key get 401; X-API-Key works like Bearer."""
    dev = device()
    reading = fleet.reading(dev.equipment[0])
    forged = f"emps_dev_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    with api.client() as client:
        assert client.post(INGEST, json=reading).status_code == 401
        for key in (forged, "not-a-key", dev.key[:-1] + ("A" if dev.key[-1] != "A" else "B")):
            answer = client.post(INGEST, json=reading, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 401, key
        answer = client.post(INGEST, json=reading, headers={"X-API-Key": dev.key})
        assert answer.status_code == 202, answer.text


def test_rotation_keeps_both_keys_working_until_the_old_one_is_revoked(api, api_db, fleet, device):
    """After rotate both keys are accepted; a revoked key, then a revoked device, get 401."""
    dev = device()
    with connect(Role.OWNER, api_db, autocommit=True) as conn:
        new = rotate_key(conn, dev.device_id, "cli:test")
    reading = fleet.reading(dev.equipment[0])
    with api.client(dev.key) as old_client, api.client(new.key) as new_client:
        assert old_client.post(INGEST, json=reading).status_code == 202
        assert new_client.post(INGEST, json=fleet.reading(dev.equipment[0], 1)).status_code == 202
        old_prefix = dev.key.split("_")[2]
        with connect(Role.OWNER, api_db, autocommit=True) as conn:
            assert revoke(conn, dev.device_id, "cli:test", prefix=old_prefix) == [old_prefix]
        assert old_client.post(INGEST, json=reading).status_code == 401
        assert new_client.post(INGEST, json=fleet.reading(dev.equipment[0], 2)).status_code == 202
        with connect(Role.OWNER, api_db, autocommit=True) as conn:
            revoke(conn, dev.device_id, "cli:test")
        assert new_client.post(INGEST, json=reading).status_code == 401


def test_a_reading_for_equipment_not_bound_to_the_device_is_refused_and_audited(
    api, api_db, fleet, device
):
    """A batch naming equipment the key is not bound to gets 403, nothing of it is written,
    and the refusal is in the audit log."""
    dev = device(fleet.equipment[:1])
    batch = [fleet.reading(fleet.equipment[0]), fleet.reading(fleet.equipment[2])]
    with api.client(dev.key) as client:
        answer = client.post(INGEST, json=batch)
    assert answer.status_code == 403, answer.text
    assert fleet.equipment[2] in answer.json()["detail"]
    with connect(Role.OWNER, api_db) as conn:
        audit = conn.execute(
            "select actor, details from ops.audit_log where action = 'api.ingest.refused'"
        ).fetchall()
    assert [a[0] for a in audit] == [f"device:{dev.device_id}"]
    assert audit[0][1]["equipment_ids"] == [fleet.equipment[2]]
    assert audit[0][1]["rows"] == [2]
    assert not (api_db.landing_dir / "incoming" / dev.device_id).exists()


def test_a_bad_reading_is_refused_naming_its_row_and_field(api, api_db, fleet, device):
    """A batch with an out-of-range value, a misspelt field or text for a number gets 422
    naming each row and field, and none of its readings is accepted."""
    dev = device()
    channel, (low, high) = next(iter(fleet.channels.items()))
    good = fleet.reading(dev.equipment[0])
    out_of_range = fleet.reading(dev.equipment[0], 1, **{channel: high + abs(high) + 1})
    misspelt = fleet.reading(dev.equipment[0], 2)
    misspelt[channel + "x"] = misspelt.pop(channel)
    not_a_number = fleet.reading(dev.equipment[0], 3, **{channel: "warm"})
    with api.client(dev.key) as client:
        answer = client.post(INGEST, json=[good, out_of_range, misspelt, not_a_number])
        broken = client.post(INGEST, content=b'{"equipment_id": ', headers={})
    assert answer.status_code == 422, answer.text
    errors = {(e["row"], e["field"]) for e in answer.json()["errors"]}
    assert {(2, channel), (3, channel + "x"), (4, channel)} <= errors
    assert not any(row == 1 for row, _ in errors)
    assert f"row 2, field {channel!r}" in answer.json()["detail"]
    assert broken.status_code == 422 and "not JSON" in broken.json()["detail"]
    assert not (api_db.landing_dir / "incoming" / dev.device_id).exists()


def test_a_body_over_the_limit_is_refused_with_413(api, api_db, fleet, device):
    """A body larger than EMPS_API_MAX_BODY_BYTES gets 413 and nothing is written."""
    dev = device()
    batch = [fleet.reading(dev.equipment[0], m) for m in range(60)]
    with api.client(dev.key) as client:
        answer = client.post(INGEST, json=batch)
    assert answer.status_code == 413, answer.text
    assert not (api_db.landing_dir / "incoming" / dev.device_id).exists()


def test_a_key_over_its_rate_gets_429_with_retry_after(api, api_db, fleet, device):
    """Beyond the key's burst, requests get 429 with a Retry-After; another key is unaffected."""
    dev, other = device(), device()
    with api.client(dev.key) as client:
        codes = [client.post(INGEST, content=b"").status_code for _ in range(20)]
        limited = client.post(INGEST, content=b"")
    assert codes[:12] == [422] * 12 and set(codes[12:]) == {429}
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    with api.client(other.key) as client:
        assert client.post(INGEST, json=fleet.reading(other.equipment[0])).status_code == 202


def test_the_same_idempotency_key_gives_the_same_id_and_one_copy(api, api_db, fleet, device):
    """Sending a batch twice with one Idempotency-Key returns the same id and writes the
    readings once; the key with a different body is refused."""
    dev = device()
    batch = [fleet.reading(dev.equipment[0], m) for m in range(2)]
    headers = {"Idempotency-Key": "batch-0001"}
    with api.client(dev.key) as client:
        first = client.post(INGEST, json=batch, headers=headers)
        second = client.post(INGEST, json=batch, headers=headers)
        changed = client.post(INGEST, json=batch[:1], headers=headers)
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.json()["id"] == second.json()["id"]
        assert second.headers.get("idempotent-replayed") == "true"
        assert changed.status_code == 422
        final = ingest_request(api_db, client, first.json()["id"])
    assert final["status"] == "loaded"
    folder = api_db.landing_dir / "archive"
    lines = [
        line
        for path in folder.rglob("*.ndjson")
        if path.name.endswith(final["file"].split("/")[-1])
        for line in path.read_text().splitlines()
    ]
    assert len(lines) == 2
    with connect(Role.OWNER, api_db) as conn:
        requests = conn.execute(
            "select count(*) from ops.api_ingest_requests where device_id = %s",
            (dev.device_id,),
        ).fetchone()[0]
    assert requests == 1


def test_status_names_the_readings_ingest_quarantined(api, api_db, fleet, device):
    """A batch where one equipment is not registered reads back as partial, naming the row."""
    unregistered = "APITEST-UNREGISTERED"
    dev = device([fleet.equipment[0], unregistered])
    batch = [fleet.reading(fleet.equipment[0]), fleet.reading(unregistered)]
    with api.client(dev.key) as client:
        answer = client.post(INGEST, json=batch)
        assert answer.status_code == 202, answer.text
        final = ingest_request(api_db, client, answer.json()["id"])
        other = device()
        with api.client(other.key) as stranger:
            assert stranger.get(f"{INGEST}/{answer.json()['id']}").status_code == 404
    assert final["status"] == "partial", final
    assert final["rows_quarantined"] == 1
    assert final["problems"][0]["row"] == 2
    assert "not registered" in " ".join(final["problems"][0]["reasons"])


def test_health_metrics_and_request_ids(api, api_db, fleet, device):
    """/health needs no key; each request's id is echoed and logged as JSON without the key,
    and /metrics counts requests per route."""
    dev = device()
    with api.client() as client:
        assert client.get("/health").json() == {"status": "ok", "database": "up"}
    with api.client(dev.key) as client:
        answer = client.post(
            INGEST, json=fleet.reading(dev.equipment[0]), headers={"X-Request-ID": "req-42"}
        )
        assert answer.headers["x-request-id"] == "req-42"
        metrics = client.get("/metrics").text
    assert f'emps_api_requests_total{{method="POST",route="{INGEST}",status="202"}}' in metrics
    assert "emps_api_request_seconds_bucket" in metrics

    def logged():
        for line in api.log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("correlation_id") == "req-42":
                return json.loads(line)
        return None

    record = wait_for(logged, what="the request's log line")
    assert record["status"] == 202 and record["device"] == dev.device_id
    assert dev.key not in api.log.read_text()
