"""AppTest of every dashboard page against the seeded test database."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest
from pypdf import PdfReader

from emps import actions
from emps.db import Role, connect
from emps.users import connect_operator


def _audit(action: str) -> list[tuple]:
    with connect(Role.OWNER) as conn:
        return conn.execute(
            "select actor, actor_role, target_id, details from ops.audit_log where action = %s "
            "order by id",
            (action,),
        ).fetchall()


def test_overview_counts_and_filters(app):
    """The overview counts equipment by severity, and the site filter narrows the fleet table."""
    at = app("viewer")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Equipment"] == "5"
    assert metrics["Critical"] == "1"
    assert metrics["No current prediction"] == "1"
    assert metrics["Silent > 15 min"] == "1"
    assert metrics["Active alerts: critical"] == "1"
    fleet = at.dataframe[0].value
    assert fleet["equipment_id"].iloc[0] == "GEN-0001"  # most at risk first
    at.multiselect(key="ov_sites").select("BRAVO").run()
    assert set(at.dataframe[0].value["equipment_id"]) == {"RAD-0001", "PMP-0001"}
    at.multiselect(key="ov_severities").select("HIGH").run()
    assert at.dataframe[0].value["equipment_id"].tolist() == ["RAD-0001"]


def test_an_untrustworthy_prediction_is_shown_beside_its_severity(app, db):
    """A LOW resting on a stuck sensor is never a silent LOW: the overview's fleet table and
    the equipment page show the assessment with its reason, and the remaining life in the
    equipment's unit."""
    from emps.transform import DASHBOARD_STATE_SELECTOR, dbt_args, run_dbt

    reason = "vibration stuck: no change over the last 1 h"
    with connect(Role.OWNER, db, autocommit=True) as conn:
        conn.execute(
            "update ops.predictions set assessment = 'insufficient_data', assessment_reason = %s, "
            "remaining_life = 21, life_unit = 'day', remaining_life_beyond = true "
            "where equipment_id = 'GEN-0002'",
            (reason,),
        )
        conn.execute(
            "truncate analytics.mart_equipment_last_reading, "
            "analytics.mart_equipment_latest_prediction"
        )
    assert run_dbt(dbt_args(["run"], db, selector=DASHBOARD_STATE_SELECTOR), db).success
    at = app("viewer")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Insufficient data"] == "2"  # GEN-0002, and VEH-0001 (never heard from)
    fleet = at.dataframe[0].value.set_index("equipment_id")
    assert fleet.loc["GEN-0002", "severity"] == "LOW"
    assert fleet.loc["GEN-0002", "assessment_text"] == f"insufficient data: {reason}"
    assert fleet.loc["GEN-0002", "remaining_life_text"] == "more than 21 days"
    at = app("viewer", equipment="GEN-0002")
    assert {m.label: m.value for m in at.metric}["Remaining life"] == "more than 21 days"
    assert at.warning[0].value == f"Assessment: insufficient data: {reason}."


def test_overview_opens_equipment_detail(app):
    """Picking an equipment on the overview opens its detail page with the id in the URL."""
    at = app("viewer")
    at.selectbox(key="ov_open").select("RAD-0001").run()
    at.button(key="ov_open_button").click().run()
    assert not at.exception
    assert at.title[0].value == "Equipment"
    assert at.query_params["equipment"] == "RAD-0001"
    assert {m.label: m.value for m in at.metric}["Severity"] == "HIGH"


def test_equipment_deep_link_shows_its_risk_and_history(app, fleet):
    """`?equipment=ID` opens that equipment: risk, charts, alerts and tasks, scripts as text."""
    at = app("viewer", equipment="GEN-0001")
    assert at.title[0].value == "Equipment"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Severity"] == "CRITICAL"
    assert metrics["Health score"] == "8"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 3  # probability, sensor trends, contributions
    alerts = at.dataframe[0].value
    assert alerts["message"].tolist() == [fleet.script_message]
    tasks = at.dataframe[1].value
    assert tasks["notes"].tolist() == [fleet.html_note]
    assert not at.get("html")
    assert all("<script>" not in md.value for md in at.markdown)


def test_equipment_unknown_id_is_reported_as_text(app):
    """An unknown or hostile id in the URL is shown escaped, and the first equipment opens instead."""
    at = app("viewer", equipment="<b>x</b>")
    assert "is not registered" in at.error[0].value
    assert "<b>" not in at.error[0].value
    assert at.query_params["equipment"] == "GEN-0001"


def test_alert_filters_change_the_table(app, fleet):
    """The status filter decides which alerts are listed, with minutes to acknowledge."""
    at = app("viewer", "pages/alerts.py")
    table = at.dataframe[0].value
    assert set(table["alert_id"]) == {fleet.critical_alert, fleet.acknowledged_alert}
    acked = table.set_index("alert_id").loc[fleet.acknowledged_alert, "minutes_to_acknowledge"]
    assert acked == pytest.approx(12.0)
    at.multiselect(key="al_st").set_value(["resolved"]).run()
    assert at.dataframe[0].value["alert_id"].tolist() == [fleet.resolved_alert]


def test_technician_acknowledges_alert_and_it_is_audited(app, fleet):
    """A technician acknowledges an alert with a note; the alert changes and the audit names them."""
    at = app("tech", "pages/alerts.py")
    at.selectbox(key="al_pick").select(fleet.critical_alert)
    at.text_area(key="al_note").input("crew dispatched")
    at.button[0].click().run()  # Acknowledge
    assert not at.exception
    assert f"Alert #{fleet.critical_alert} acknowledged." in at.success[0].value
    table = at.dataframe[0].value.set_index("alert_id")
    assert table.loc[fleet.critical_alert, "status"] == "acknowledged"
    assert table.loc[fleet.critical_alert, "acknowledged_by"] == "tech"
    [(actor, role, target, details)] = _audit("alert.acknowledge")
    assert (actor, role, target) == ("tech", "Technician", str(fleet.critical_alert))
    assert details["note"] == "crew dispatched"


def test_acknowledgement_shows_on_the_overview_at_once(app, fleet):
    """After a technician acknowledges an alert, the overview's fleet table shows it on the next
    load: alerts are read live, not from a table refreshed after scoring."""
    at = app("tech")
    fleet_table = at.dataframe[0].value.set_index("equipment_id")
    assert fleet_table.loc["GEN-0001", "open_alert_status"] == "open"
    assert any("as of the scoring refresh of" in c.value for c in at.caption)
    at.switch_page("pages/alerts.py").run()
    at.selectbox(key="al_pick").select(fleet.critical_alert)
    at.button[0].click().run()  # Acknowledge
    assert not at.exception
    at.switch_page("pages/overview.py").run()
    fleet_table = at.dataframe[0].value.set_index("equipment_id")
    assert fleet_table.loc["GEN-0001", "open_alert_status"] == "acknowledged"


def test_viewer_cannot_acknowledge(app, fleet, signed_in_as):
    """A viewer sees the actions disabled, and the app and the database both refuse them."""
    at = app("viewer", "pages/alerts.py")
    assert all(b.disabled for b in at.button if b.label in ("Acknowledge", "Resolve"))
    viewer = signed_in_as("viewer")
    with pytest.raises(actions.NotAllowed):
        actions.acknowledge_alert(viewer, fleet.critical_alert, "sneaky")
    # Even a client that skips the app's check is refused by the operator role's function,
    # which finds the role from the session token.
    with (
        connect_operator() as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="only Admin or Technician"),
    ):
        conn.execute(
            "select ops.user_acknowledge_alert(%s, %s, null)", (viewer.token, fleet.critical_alert)
        )
    # ... and a user name where the token goes is no session at all.
    with (
        connect_operator() as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="session has ended"),
    ):
        conn.execute("select ops.user_acknowledge_alert('tech', %s, null)", (fleet.critical_alert,))
    with connect(Role.OWNER) as conn:
        status = conn.execute(
            "select status from ops.alerts where id = %s", (fleet.critical_alert,)
        ).fetchone()[0]
    assert status == "open"
    assert _audit("alert.acknowledge") == []


def test_operator_role_cannot_touch_tables(fleet):
    """The dashboard's write role can only call the audited functions, not write tables."""
    with (
        connect_operator() as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("update ops.alerts set status = 'resolved'")


def test_resolving_twice_says_why(app, fleet, signed_in_as):
    """Resolving an already resolved alert shows the database's reason, not a stack trace."""
    tech = signed_in_as("tech")
    with pytest.raises(actions.ActionFailed, match="already resolved"):
        actions.resolve_alert(tech, fleet.resolved_alert, "again")


def test_maintenance_create_and_complete(app, fleet):
    """A technician creates a task and completes another; both show up and are audited."""
    at = app("tech", "pages/maintenance.py")
    assert len(at.dataframe[0].value) == 2
    at.selectbox(key="mt_new_eq").select("PMP-0001")
    at.selectbox(key="mt_new_type").select("preventive")
    at.text_area(key="mt_new_notes").input("replace seals")
    next(b for b in at.button if b.label == "Create task").click().run()
    assert not at.exception
    assert "Preventive task created for PMP-0001." in at.success[0].value
    schedule = at.dataframe[0].value
    assert "PMP-0001" in set(schedule["equipment_id"])
    at.selectbox(key="mt_cp").select(fleet.upcoming_task)
    at.radio(key="mt_cp_outcome").set_value("fault_found")
    next(b for b in at.button if b.label == "Complete").click().run()
    assert not at.exception
    assert fleet.upcoming_task not in set(at.dataframe[0].value["task_id"])
    [(actor, role, _, details)] = _audit("task.create")
    assert (actor, role, details["task_type"]) == ("tech", "Technician", "preventive")
    [(_, role, target, details)] = _audit("task.complete")
    assert (role, target, details["outcome"]) == (
        "Technician",
        str(fleet.upcoming_task),
        "fault_found",
    )


def test_a_technician_records_a_failure_and_a_backdated_service(app, fleet):
    """A technician records a failure with its mode on the maintenance page, and completes a
    task at the time it was done: both are audited, and the failure found at service becomes a
    failure the model learns from."""
    at = app("tech", "pages/maintenance.py")
    at.selectbox(key="mt_fail_eq").select("PMP-0001")
    yesterday = fleet.now.date() - timedelta(days=1)
    at.date_input(key="mt_fail_day").set_value(yesterday)
    at.text_input(key="mt_fail_mode").input("seal leak")
    next(b for b in at.button if b.label == "Record failure").click().run()
    assert not at.exception
    assert "Failure of PMP-0001" in at.success[0].value
    [(actor, role, target, details)] = _audit("failure.record")
    assert (actor, role, target, details["failure_mode"]) == (
        "tech",
        "Technician",
        "PMP-0001",
        "seal leak",
    )
    at.selectbox(key="mt_cp").select(fleet.upcoming_task)
    at.radio(key="mt_cp_outcome").set_value("failed_before_service")
    at.date_input(key="mt_cp_day").set_value(yesterday)
    next(b for b in at.button if b.label == "Complete").click().run()
    assert not at.exception
    [(_, _, _, details)] = _audit("task.complete")
    assert details["completed_at"].startswith(str(yesterday))
    with connect(Role.OWNER) as conn:
        sources = conn.execute(
            "select source from raw.failure_events where failed_at::date = %s "
            "and equipment_id in ('PMP-0001', 'GEN-0001') order by source",
            (yesterday,),
        ).fetchall()
    assert [s for (s,) in sources] == ["maintenance", "operator"]


def test_a_viewer_cannot_record_a_failure(fleet, signed_in_as):
    """Recording a failure is for Technicians and Admins: a Viewer is refused."""
    viewer = signed_in_as("viewer")
    with pytest.raises(actions.NotAllowed):
        actions.record_failure(viewer, "PMP-0001", datetime.now(UTC), "seal leak")


def test_maintenance_reschedule(fleet, signed_in_as):
    """Rescheduling moves the task and records where it moved from."""
    tech = signed_in_as("tech")
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=9)
    row = actions.reschedule_task(tech, fleet.upcoming_task, when, "parts late")
    assert row["scheduled_date"] == when
    [(_, role, _, details)] = _audit("task.reschedule")
    assert role == "Technician" and details["note"] == "parts late"


def test_analytics_page(app):
    """Analytics shows failures caught vs missed and the response-time figures; with no
    champion to replay, the backtest says why instead of showing zeros."""
    at = app("viewer", "pages/analytics.py")
    metrics = {m.label: m.value for m in at.metric}
    assert [
        metrics[k]
        for k in (
            "Failures",
            "Before the first model",
            "Caught by a live alert",
            "Missed by the live alerts",
        )
    ] == ["2", "0", "1", "1"]
    assert metrics["Mean minutes to acknowledge"] == "21.0"  # (12 + 30) / 2
    assert len(at.get("vega_lite_chart")) >= 4
    assert any(i.value.startswith("No backtest:") for i in at.info)


def test_analytics_shows_the_champions_backtest_and_failures_before_any_model(replay_champion, app):
    """The champion's replay of the range: the alerts, warned failures and false alerts worked
    out by hand, per week in charts; a failure before the first model is not counted missed;
    with no acknowledged alert the mean time to acknowledge is "—", not 0."""
    with connect(Role.OWNER, autocommit=True) as conn:
        conn.execute("update ops.alerts set acknowledged_at = null, acknowledged_by = null")
    at = app("viewer", "pages/analytics.py")
    metrics = {m.label: m.value for m in at.metric}
    expected = replay_champion
    assert metrics["Alerts it would have raised"] == str(expected.alerts)
    assert metrics["Failures warned ≥ 3 days ahead"] == f"{expected.warned} of {expected.failures}"
    assert metrics["False alert episodes"] == "1"
    assert metrics["Median lead (days)"] == "2.5"  # 4 days and 1 day
    # Live: the first replayed failure came before the first champion (seeded 20 days ago).
    assert [
        metrics[k]
        for k in (
            "Failures",
            "Before the first model",
            "Caught by a live alert",
            "Missed by the live alerts",
        )
    ] == ["5", "1", "1", "3"]
    assert metrics["Mean minutes to acknowledge"] == "—"
    titles = [str(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    assert any("Alert episodes per week" in t for t in titles)
    assert any("warned, late, missed" in t for t in titles)
    assert any(f"Model v{expected.version}" in c.value for c in at.caption)


def test_admin_sees_what_new_bands_would_have_done_before_saving(replay_champion, app):
    """Lowering HIGH shows the alerts it would have added over the last weeks next to the
    bands in force; nothing is saved until the admin saves; bands that do not rise are
    refused before any replay."""
    expected = replay_champion
    at = app("admin", "pages/admin.py")
    text = " ".join(m.value for m in at.markdown)
    current = f"{expected.alerts} alerts, {expected.warned} of {expected.failures} failures"
    assert f"With the current bands, last 8 weeks: **{current} warned ≥ 3 days ahead**" in text
    at.number_input(key="th_severity_medium").set_value(expected.lower_medium).run()
    at.number_input(key="th_severity_high").set_value(expected.lower_high).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    lower = f"{expected.alerts_lower_high} alerts, {expected.warned} of {expected.failures}"
    assert f"With these bands, last 8 weeks: **{lower} failures warned ≥ 3 days ahead**" in text
    assert f"**{current} warned ≥ 3 days ahead**" in text
    assert _audit("threshold.update") == []
    at.number_input(key="th_severity_high").set_value(0.9).run()
    assert any("must rise" in w.value for w in at.warning)


def test_data_quality_page(app, fleet):
    """The ingest ledger and quarantine are listed, hostile raw values shown as plain text, and
    the platform's open operations alerts lead the page."""
    with connect(Role.OWNER, autocommit=True) as conn:
        conn.execute(
            "insert into ops.operations_alerts (rule, subject, summary) values "
            "('ingest_claim_stale', 'landing/processing', '2 file(s) claimed for more than "
            "600 s'), ('quarantine_share', 'ingest', 'cleared')"
        )
        conn.execute(
            "update ops.operations_alerts set status = 'resolved' where summary = 'cleared'"
        )
    at = app("viewer", "pages/data_quality.py")
    [warning] = at.warning
    assert "ingest\\_claim\\_stale" in warning.value and "600 s" in warning.value
    assert len(_table(at, "status")) == 3
    quarantine = _table(at, "kind")
    assert len(quarantine) == 2
    assert any(fleet.html_note.replace('"', '\\"') in v for v in quarantine["raw_values"])
    at.multiselect(key="dq_status").select("partial").run()
    assert _table(at, "status")["file_name"].tolist() == ["drop-0002.csv"]


def _table(at, column: str) -> pd.DataFrame:
    """The page's first table with this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _conflict(fleet) -> tuple[int, str]:
    """A re-sent reading of GEN-0001 with another value of its first reading column."""
    from emps.catalog import load_catalog
    from emps.ingest.columns import reading_columns

    column = reading_columns(load_catalog())[0]
    with connect(Role.OWNER, autocommit=True) as conn:
        ts, stored, file_id = conn.execute(
            f"select ts, {column}, (select min(id) from raw.ingest_files) "  # noqa: S608
            "from raw.sensor_readings where equipment_id = 'GEN-0001' order by ts desc limit 1"
        ).fetchone()
        row_id = conn.execute(
            "insert into raw.quarantined_rows (ingest_file_id, file_name, row_number, "
            "equipment_id, reasons, raw_values, kind, stored_values) values (%s, 'again.csv', 1, "
            "'GEN-0001', array['conflict: GEN-0001 already has a different reading'], "
            "jsonb_build_object('equipment_id', 'GEN-0001', 'timestamp', %s::timestamptz, %s::text, "
            "%s::float8), 'conflict', (select jsonb_object_agg(c.sensor, to_jsonb(r) -> c.sensor) "
            "from raw.sensor_readings r, raw.sensor_catalog c where r.equipment_id = 'GEN-0001' "
            "and r.ts = %s)) returning id",
            (file_id, ts, column, stored + 1.25, ts),
        ).fetchone()[0]
    return row_id, column


def test_data_quality_shows_conflicts_side_by_side_and_admins_decide(app, fleet):
    """A conflicting re-send is shown with the received and the stored value next to each other;
    a viewer cannot decide, an admin accepts it (audited) and the stored reading changes."""
    row_id, column = _conflict(fleet)
    viewer = app("viewer", "pages/data_quality.py")
    table = _table(viewer, "reading_time")
    [shown] = table.to_dict("records")
    assert shown[f"{column} received"] == shown[f"{column} stored"] + 1.25
    assert not [b for b in viewer.button if b.label == "Accept the received reading"]

    at = app("admin", "pages/data_quality.py")
    at.text_input(key="dq_conflict_note").input("sensor replaced")
    next(b for b in at.button if b.label == "Accept the received reading").click().run()
    assert not at.exception
    assert "accepted" in at.success[0].value
    [(actor, role, _, details)] = _audit("reading.accept_conflict")
    assert (actor, role, details["note"]) == ("admin", "Admin", "sensor replaced")
    with connect(Role.OWNER) as conn:
        value = conn.execute(
            f"select {column} from raw.sensor_readings where equipment_id = 'GEN-0001' "  # noqa: S608
            "order by ts desc limit 1"
        ).fetchone()[0]
    assert value == shown[f"{column} received"]
    assert at.info and any("No conflict" in i.value for i in at.info)


def test_data_quality_admin_queues_quarantined_rows_for_a_retry(app, fleet):
    """An admin picks quarantined rows to validate again at the next ingest run; it is audited."""
    at = app("admin", "pages/data_quality.py")
    ids = _table(at, "kind")["id"].tolist()
    at.multiselect(key="dq_retry_rows").select(ids[0])
    next(b for b in at.button if b.label == "Retry these rows").click().run()
    assert not at.exception
    assert "1 row(s) will be validated again" in at.success[0].value
    [(actor, _, target, _)] = _audit("quarantine.retry")
    assert (actor, target) == ("admin", str(ids[0]))


def test_report_downloads_pdf_and_csv(app):
    """A site report yields a PDF whose text names the site and a CSV with that site's equipment."""
    at = app("viewer", "pages/reports.py")
    at.radio(key="rp_kind").set_value("site").run()
    at.selectbox(key="rp_site").select("BRAVO")
    at.button(key="rp_generate").click().run()
    assert not at.exception
    assert [b.label for b in at.get("download_button")] == ["Download PDF", "Download CSV"]
    built = at.session_state["report"]
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(built["pdf"])).pages)
    assert "EMPS Site BRAVO report" in text
    assert "RAD-0001" in text and "GEN-0001" not in text
    rows = pd.read_csv(io.BytesIO(built["csv"]))
    assert sorted(rows["equipment_id"]) == ["PMP-0001", "RAD-0001"]
    assert built["csv_name"].endswith(".csv") and built["csv_name"].startswith("emps-site-bravo")


def test_admin_page_only_for_admins(app):
    """Only admins get the Admin page; they add users and change thresholds, both audited."""
    at = app("tech")
    assert "pages/admin.py" not in str(at._registered_pages)
    at = app("admin", "pages/admin.py")
    at.text_input(key="ad_username").input("night.shift")
    at.selectbox(key="ad_role").select("Technician")
    at.text_input(key="ad_password").input("a-long-enough-password")
    next(b for b in at.button if b.label == "Save user").click().run()
    assert not at.exception
    assert "night.shift" in set(at.dataframe[0].value["username"])
    at.number_input(key="th_severity_critical").set_value(0.9)
    next(b for b in at.button if b.label == "Save thresholds").click().run()
    assert not at.exception
    [(actor, role, key, details)] = _audit("threshold.update")
    assert (actor, role, key, details["to"]) == ("admin", "Admin", "severity_critical", 0.9)
    assert _audit("user.create")[-1][:3] == ("admin", "Admin", "night.shift")


def test_admin_page_lists_the_archived_records(app):
    """The Admin page says what retention archived, per kind, and where the files are."""
    at = app("admin", "pages/admin.py")
    assert "Nothing archived yet" in " ".join(c.value for c in at.caption)
    with connect(Role.OWNER) as conn:
        conn.execute(
            "insert into ops.archive_files (kind, path, row_count, sha256, size_bytes,"
            " taken_before) values ('audit_log', 'audit_log/2026/01/a.jsonl.gz', 1200, 'x', 9000,"
            " now() - interval '1 year')"
        )
    at = app("admin", "pages/admin.py")
    table = next(d.value for d in at.dataframe if "kind" in d.value.columns)
    assert table.loc[0, "kind"] == "audit_log" and table.loc[0, "rows"] == 1200
    assert any("records" in c.value for c in at.caption)


def test_thresholds_must_stay_ordered(fleet, signed_in_as):
    """A critical threshold below the high one is refused with the reason."""
    admin = signed_in_as("admin")
    with pytest.raises(actions.ActionFailed, match="must rise"):
        actions.set_threshold(admin, "severity_critical", 0.5)


def test_alerts_page_warns_when_notifications_wait_too_long(app, fleet):
    """When a due notification has waited past EMPS_NOTIFY_PENDING_ALERT_S, the Alerts page says
    crews may not be getting them, with the last error (mail cannot announce its own outage)."""
    import streamlit as st

    at = app("viewer", "pages/alerts.py")
    assert not at.warning
    with connect(Role.OWNER) as conn:
        conn.execute(
            "insert into ops.notifications (channel, recipient, body_text, dedupe_key, status,"
            " last_error, due_at) values ('email', 'crew@crews.example', 't', 'late', 'failed',"
            " 'SMTP server relay:587 is unreachable', now() - interval '42 minutes')"
        )
    st.cache_data.clear()  # the page reads the backlog through a 2-minute cache
    at = app("viewer", "pages/alerts.py")
    (warning,) = at.warning
    assert "Crews may not be getting alert notifications: 1 waiting" in warning.value
    assert "42 min" in warning.value and "emps notify status" in warning.value
    # The read-only dashboard never shows a recipient or a delivery error (they may hold both).
    assert "crew@crews.example" not in warning.value and "relay" not in warning.value
