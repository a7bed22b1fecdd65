"""The endpoints for people and systems against the real service: user tokens, roles, the
dashboard's figures, audited actions, predictions and reports."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sibling_modules import load_module

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml import synthetic
from emps.reports import build_report
from emps.settings import Settings
from emps.users import mint_token

# The dashboard tests' seeded fleet, reused as it is.
seeded = load_module("dashboard_seed", "tests/dashboard/conftest.py")
V1 = "/api/v1"


@dataclass
class Seeded:
    fleet: object
    tokens: dict[str, str]


@pytest.fixture
def seeded_fleet(db: Settings, dashboard_marts: Settings) -> Seeded:
    """The dashboard's five-equipment fleet, and an API token for its admin, tech and viewer."""
    with connect(Role.OWNER, db, autocommit=True) as conn:
        fleet = seeded.seed_fleet(conn)
        tokens = {u: mint_token(conn, u, "api test", 1)[0] for u in ("admin", "tech", "viewer")}
    seeded.refresh_dashboard_state(db)
    return Seeded(fleet, tokens)


READS = [
    f"{V1}/sensors/GEN-0001/latest",
    f"{V1}/predictions/GEN-0001/latest",
    f"{V1}/alerts",
    f"{V1}/dashboard/overview",
    f"{V1}/dashboard/equipment/GEN-0001/details",
    f"{V1}/analytics/alert-statistics",
]


def test_every_endpoint_refuses_a_missing_wrong_expired_or_device_token(
    api, db, seeded_fleet, device
):
    """No token, an unknown one, an expired one, a revoked one and a device key all get 401."""
    with connect(Role.OWNER, db) as conn:
        expired, _, _ = mint_token(conn, "viewer", "expired", 1)
        revoked, revoked_id, _ = mint_token(conn, "viewer", "revoked", 1)
        conn.execute(
            "update ops.auth_tokens set expires_at = now() - interval '1 second' "
            "where label = 'expired'"
        )
        conn.execute("update ops.auth_tokens set revoked_at = now() where id = %s", (revoked_id,))
        conn.commit()
    posts = [
        (f"{V1}/alerts/{seeded_fleet.fleet.critical_alert}/acknowledge", {}),
        (f"{V1}/maintenance/schedule", {}),
        (f"{V1}/predictions/predict", {"equipment_ids": ["GEN-0001"]}),
        (f"{V1}/reports/generate", {}),
    ]
    for key in (None, "emps_not-a-token", expired, revoked, device().key):
        with api.client(key) as client:
            for path in READS:
                answer = client.get(path)
                assert answer.status_code == 401, (path, answer.text)
                assert "emps user token" in answer.json()["detail"]
            for path, body in posts:
                assert client.post(path, json=body).status_code == 401, path


def test_any_role_reads_the_dashboards_figures_filtered_and_paged(api, seeded_fleet):
    """A Viewer's token reads readings, predictions, alerts, overview, details and statistics
    as the dashboard shows them; unknown equipment is 404 and a bad filter names its field."""
    fleet = seeded_fleet.fleet
    channels = load_catalog().channel_names
    with api.client(seeded_fleet.tokens["viewer"]) as client:
        latest = client.get(f"{V1}/sensors/GEN-0001/latest", params={"limit": 3}).json()
        times = [r["ts"] for r in latest["readings"]]
        assert len(times) == 3 and times == sorted(times, reverse=True)
        assert set(channels) <= set(latest["readings"][0])

        prediction = client.get(
            f"{V1}/predictions/GEN-0001/latest", params={"history_days": 1}
        ).json()
        assert prediction["prediction"]["severity"] == "CRITICAL"
        assert prediction["prediction"]["explanation"][0]["sensor"] == "vibration"
        assert len(prediction["history"]) > 1

        open_alerts = client.get(f"{V1}/alerts", params={"status": "open"}).json()
        assert [a["alert_id"] for a in open_alerts["items"]] == [fleet.critical_alert]
        first = client.get(f"{V1}/alerts", params={"limit": 2}).json()
        rest = client.get(f"{V1}/alerts", params={"limit": 2, "offset": 2}).json()
        assert first["next_offset"] == 2 and rest["next_offset"] is None
        paged = [a["alert_id"] for a in first["items"] + rest["items"]]
        assert sorted(paged) == sorted(
            [fleet.critical_alert, fleet.acknowledged_alert, fleet.resolved_alert]
        )
        site = client.get(f"{V1}/alerts", params=[("site", "BRAVO"), ("severity", "HIGH")]).json()
        assert [a["alert_id"] for a in site["items"]] == [fleet.acknowledged_alert]

        overview = client.get(f"{V1}/dashboard/overview", params={"limit": 2}).json()
        assert overview["equipment"] == 5
        assert overview["by_severity"]["CRITICAL"] == 1
        assert overview["activity"]["alerts_unacknowledged"] == 1
        assert overview["fleet"]["items"][0]["equipment_id"] == "GEN-0001"
        assert len(overview["fleet"]["items"]) == 2 and overview["fleet"]["next_offset"] == 2
        bravo = client.get(f"{V1}/dashboard/overview", params={"site": "BRAVO"}).json()
        assert bravo["equipment"] == 2

        details = client.get(f"{V1}/dashboard/equipment/GEN-0001/details").json()
        assert details["health"]["site"] == "ALPHA"
        # Every channel of the catalog (other tests' catalogs may have added more columns).
        assert set(channels) <= {c["sensor"] for c in details["channels"]}
        assert details["sensor_trend"] and details["prediction_history"]
        assert [a["alert_id"] for a in details["alerts"]] == [fleet.critical_alert]
        assert details["maintenance"][0]["task_id"] == fleet.upcoming_task

        stats = client.get(
            f"{V1}/analytics/alert-statistics",
            params={"since": (fleet.now - timedelta(days=10)).isoformat()},
        ).json()
        assert stats["totals"]["alerts"] == 3
        assert stats["totals"]["by_severity"] == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1}
        assert {f["equipment_id"] for f in stats["failures"]} == {"PMP-0001", "GEN-0002"}

        for path in (
            f"{V1}/sensors/NOPE-1/latest",
            f"{V1}/predictions/NOPE-1/latest",
            f"{V1}/dashboard/equipment/NOPE-1/details",
        ):
            answer = client.get(path)
            assert answer.status_code == 404 and "NOPE-1" in answer.json()["detail"], path
        bad = client.get(f"{V1}/alerts", params={"severity": "SEVERE"})
        assert bad.status_code == 422 and "'severity'" in bad.json()["detail"]
        bad = client.get(f"{V1}/alerts", params={"limit": 0})
        assert bad.status_code == 422 and "'limit'" in bad.json()["detail"]
        metrics = client.get("/metrics").text
    assert 'route="/api/v1/dashboard/overview"' in metrics


def audit_rows(settings: Settings, action: str) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select actor, actor_role, target_id from ops.audit_log where action = %s order by id",
            (action,),
        ).fetchall()


def test_technicians_act_viewers_are_refused_and_every_act_is_audited(api, db, seeded_fleet):
    """A Technician acknowledges an alert and schedules a task, audited under their name; a
    Viewer gets 403; unknown ids are 404, a repeat is 409 and a bad body names the field."""
    alert = seeded_fleet.fleet.critical_alert
    ack = f"{V1}/alerts/{alert}/acknowledge"
    task = {
        "equipment_id": "GEN-0001",
        "task_type": "inspection",
        "priority": 1,
        "scheduled_date": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "alert_id": alert,
    }
    with api.client(seeded_fleet.tokens["viewer"]) as viewer:
        refused = viewer.post(ack, json={"note": "on it"})
        assert refused.status_code == 403 and "Viewer" in refused.json()["detail"]
        assert viewer.post(f"{V1}/maintenance/schedule", json=task).status_code == 403
    with api.client(seeded_fleet.tokens["tech"]) as tech:
        bad = tech.post(ack, json={"note": "x" * 3000})
        assert bad.status_code == 422 and "'note'" in bad.json()["detail"]
        done = tech.post(ack, json={"note": "crew on the way"})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "acknowledged"
        assert done.json()["acknowledged_by"] == "tech"
        again = tech.post(ack)
        assert again.status_code == 409 and "already" in again.json()["detail"]
        assert tech.post(f"{V1}/alerts/999999/acknowledge").status_code == 404

        twice = tech.post(f"{V1}/maintenance/schedule", json=task)  # the alert has its task
        assert twice.status_code == 409 and "already has an open" in twice.json()["detail"]
        task["alert_id"] = None
        created = tech.post(f"{V1}/maintenance/schedule", json=task)
        assert created.status_code == 201, created.text
        assert created.json()["created_by"] == "tech"
        unknown = tech.post(f"{V1}/maintenance/schedule", json={**task, "equipment_id": "NOPE-1"})
        assert unknown.status_code == 404 and "NOPE-1" in unknown.json()["detail"]
        bad = tech.post(f"{V1}/maintenance/schedule", json={**task, "priority": 9})
        assert bad.status_code == 422 and "'priority'" in bad.json()["detail"]
        bad = tech.post(f"{V1}/maintenance/schedule", json={**task, "scheduled_date": "soon"})
        assert bad.status_code == 422 and "'scheduled_date'" in bad.json()["detail"]
    assert audit_rows(db, "alert.acknowledge") == [("tech", "Technician", str(alert))]
    assert audit_rows(db, "task.create") == [("tech", "Technician", str(created.json()["id"]))]


def test_reports_are_the_dashboards_pdf_and_csv(api, db, seeded_fleet):
    """Any role gets the Reports page's CSV (byte for byte) and PDF; an unknown equipment is
    404 and a bad scope names the field."""
    until = seeded_fleet.fleet.now.replace(second=0) + timedelta(minutes=1)
    since = until - timedelta(days=7)
    body = {"scope": "site:BRAVO", "since": since.isoformat(), "until": until.isoformat()}
    with api.client(seeded_fleet.tokens["viewer"]) as client:
        csv = client.post(f"{V1}/reports/generate", json={**body, "format": "csv"})
        pdf = client.post(f"{V1}/reports/generate", json=body)
        unknown = client.post(f"{V1}/reports/generate", json={**body, "scope": "equipment:NOPE"})
        bad = client.post(f"{V1}/reports/generate", json={**body, "scope": "planet:mars"})
    report = build_report("site:BRAVO", since, until, db)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.content == report.csv_bytes()
    assert set(pd.read_csv(io.BytesIO(csv.content))["equipment_id"]) == {"RAD-0001", "PMP-0001"}
    assert report.filename("csv") in csv.headers["content-disposition"]
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert unknown.status_code == 404 and "NOPE" in unknown.json()["detail"]
    assert bad.status_code == 422 and "'scope'" in bad.json()["detail"]


def test_predict_scores_many_equipment_with_what_if_overrides(api, db, dashboard_marts, champion):
    """Any role predicts several equipment at once from their latest features, as the dashboard's
    what-if does (same figures); unknown equipment is 404 and an unknown feature is named."""
    from emps.ml.predict import predict_equipment

    settings, examples = champion
    tail = examples[examples["ts"] > examples["ts"].max() - pd.Timedelta(days=1)]
    synthetic.load_examples(tail, settings, settings.ml.features_relation)
    with connect(Role.OWNER, db, autocommit=True) as conn:
        token = mint_token(conn, _viewer(conn), "api test", 1)[0]
    ids = ["EQ-0006", "EQ-0001"]
    # EQ-0006 fails, drifting on one sensor before it does (emps/ml/synthetic.py): its values
    # just before a failure are the what-if.
    sensors = load_catalog(settings.catalog_path).sensor_names
    driver = sensors[6 % len(sensors)]
    worst = examples[
        (examples["equipment_id"] == "EQ-0006") & (examples["days_until_failure"] < 0.5)
    ]
    drifting = {c: float(worst[c].iloc[-1]) for c in worst.columns if c.startswith(driver)}
    with api.client(token) as client:
        plain = client.post(f"{V1}/predictions/predict", json={"equipment_ids": ids})
        what_if = client.post(
            f"{V1}/predictions/predict", json={"equipment_ids": ids[:1], "overrides": drifting}
        )
        unknown = client.post(f"{V1}/predictions/predict", json={"equipment_ids": ["NOPE-1"]})
        bad_feature = client.post(
            f"{V1}/predictions/predict",
            json={"equipment_ids": ids[:1], "overrides": {"not_a_feature": 1.0}},
        )
        empty = client.post(f"{V1}/predictions/predict", json={"equipment_ids": []})
    assert plain.status_code == 200, plain.text
    answers = plain.json()["predictions"]
    assert [p["equipment_id"] for p in answers] == ids
    for answer in answers:
        expected = predict_equipment(answer["equipment_id"], settings=settings)
        assert answer["failure_probability"] == pytest.approx(expected["failure_probability"])
        assert answer["model_version"] == expected["model_version"]
    assert what_if.status_code == 200, what_if.text
    changed = what_if.json()["predictions"][0]
    assert changed["what_if"] == drifting
    assert changed["failure_probability"] > answers[0]["failure_probability"]
    assert unknown.status_code == 404 and "NOPE-1" in unknown.json()["detail"]
    assert bad_feature.status_code == 422 and "not_a_feature" in bad_feature.json()["detail"]
    assert empty.status_code == 422 and "'equipment_ids'" in empty.json()["detail"]


def _viewer(conn) -> str:
    from emps.users import add_user

    return add_user(conn, "api-viewer", "Viewer", "a long enough password", rounds=4).username
