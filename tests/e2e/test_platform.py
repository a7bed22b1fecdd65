"""The whole platform, as a user meets it: `emps up`, a device dropping files, an alert by email.

Everything is observed from the outside: the Prefect and MLflow REST APIs, SQL as a read-only
user, the SMTP sink's mailbox and the dashboard in a real browser. Nothing internal is called.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import yaml

from emps.settings import PROJECT_ROOT
from emps.simulator.drops import runaway_wear_rows

EQUIPMENT = "GEN-E2E-0001"
SITE = "north-ridge"
ADMIN_PASSWORD = "e2e-admin-password-1"
ESCALATION_DELAY_S = 20  # how long a CRITICAL alert may stay unacknowledged here
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e"
# The first start backfills, builds features and trains: minutes, not the default 10.
pytestmark = pytest.mark.timeout(2700)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Platform:
    home: Path
    env: dict[str, str]
    process: subprocess.Popen
    output: Path
    prefect: str
    mlflow: str
    dashboard: str
    api: str

    def secrets(self) -> dict:
        """What `emps up` generated: `emps secrets show --database` prints the same."""
        return json.loads((self.home / "secrets.json").read_text())

    @property
    def database(self) -> str:
        """The platform database as the dashboard's read-only role, with its password."""
        password = self.secrets()["database"]["emps_reader"]
        return f"postgresql://emps_reader:{password}@127.0.0.1:{self.env['EMPS_PG_PORT']}/emps"

    def sql(self, query: str, *params):
        with psycopg.connect(self.database, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def prefect_api(self) -> httpx.Client:
        """The Prefect API as a user's script reaches it: the auth string, and a CSRF token for
        the calls that change something (an open client)."""
        user, password = self.secrets()["prefect_auth"].split(":", 1)
        client = httpx.Client(base_url=self.prefect + "/", auth=(user, password), timeout=10)
        client_id = str(uuid.uuid4())
        token = client.get("csrf-token", params={"client": client_id}).raise_for_status()
        client.headers.update(
            {"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": client_id}
        )
        return client

    def mlflow_auth(self) -> tuple[str, str]:
        user, password = self.secrets()["mlflow_auth"].split(":", 1)
        return user, password


def free_ports(count: int) -> list[int]:
    import socket

    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def wait_for(what: str, check, timeout_s: float, platform: Platform | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if platform is not None and platform.process.poll() is not None:
            pytest.fail(f"emps up exited while waiting for {what}:\n{platform.output.read_text()}")
        if time.monotonic() > deadline:
            tail = platform.output.read_text()[-3000:] if platform else ""
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
        time.sleep(2)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    """`emps up --no-simulator` on free ports in a private home, stopped with Ctrl-C at the end."""
    # Not under pytest's tmp dir: pytest makes it 0700 again at each session start, which would
    # lock out the unprivileged user PostgreSQL runs as.
    home = Path(tempfile.mkdtemp(prefix="emps-e2e-"))
    pg, prefect, mlflow, streamlit, metrics, smtp, api = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMPS_", "PREFECT_"))}
    env.update(
        {
            "EMPS_HOME": str(home),
            "EMPS_PG_PORT": str(pg),
            "EMPS_PREFECT_PORT": str(prefect),
            "EMPS_MLFLOW_PORT": str(mlflow),
            "EMPS_STREAMLIT_PORT": str(streamlit),
            "EMPS_METRICS_PORT": str(metrics),
            "EMPS_SMTP_PORT": str(smtp),
            "EMPS_API_PORT": str(api),
            "EMPS_DASHBOARD_BASE_URL": f"http://127.0.0.1:{streamlit}",
            "EMPS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # The commanders' time zone: the cron schedules must follow it.
            "EMPS_TIMEZONE": "Europe/Paris",
            # Test-sized: enough history for a model to learn degradation (30 equipment x 30
            # days held no failure to train on; 60 x 60 holds 10 to 15), small enough for CI.
            # The model's quality is not what this tests: 20 or 30 trees scored the runaway wear
            # 0.89 to 0.99 (60 trees: 0.83 to 1.0) in two-thirds of the training time.
            "EMPS_SIM_EQUIPMENT": "60",
            "EMPS_SIM_HISTORY_DAYS": "60",
            "EMPS_ML_N_ESTIMATORS": "30",
            # Escalation within the test's patience; the check itself is run on demand.
            "EMPS_ESCALATION_DELAY_MIN": str(ESCALATION_DELAY_S / 60),
            "PYTHONUNBUFFERED": "1",
        }
    )
    output = home / "emps-up.out"
    process = subprocess.Popen(
        [sys.executable, "-m", "emps.cli", "up", "--no-simulator"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Platform(
        home=home,
        env=env,
        process=process,
        output=output,
        prefect=f"http://127.0.0.1:{prefect}/api",
        mlflow=f"http://127.0.0.1:{mlflow}",
        dashboard=f"http://127.0.0.1:{streamlit}",
        api=f"http://127.0.0.1:{api}",
    )
    try:
        wait_for("EMPS is up", lambda: "EMPS is up" in output.read_text(), 1500, running)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(home, ignore_errors=True)


def drop_csv(incoming: Path, name: str, rows: list[dict]) -> None:
    """Write like a device does: a temporary name first, then an atomic rename."""
    partial = incoming / f".{name}.part"
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    partial.rename(incoming / name)


def run_deployment(platform: Platform, deployment: str) -> None:
    """Run a deployment now, as "Quick run" in the Prefect UI does, until a run completes (a run
    the concurrency limit cancels, because a scheduled one is running, is tried again)."""
    flow, name = deployment.split("/")
    prefect = platform.prefect_api()
    dep = prefect.get(f"deployments/name/{flow}/{name}").json()
    for _ in range(5):
        run = prefect.post(f"deployments/{dep['id']}/create_flow_run", json={}).json()

        def finished(run_id: str = run["id"]) -> str | None:
            state = prefect.get(f"flow_runs/{run_id}").json()
            final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            return state["state"]["type"] if state["state"]["type"] in final else None

        outcome = wait_for(f"a run of {deployment}", finished, 180, platform)
        if outcome == "COMPLETED":
            return
        assert outcome == "CANCELLED", f"{deployment} run ended {outcome}"
        time.sleep(5)
    pytest.fail(f"no run of {deployment} completed")


def test_a_degrading_generator_reaches_the_crew_and_the_dashboard(platform: Platform, tmp_path):
    """A device's drops flow through ingest, features, the champion model and the alert flow to
    one alert, one task, one email per recipient, the Prometheus metrics, an escalation while
    nobody answers (when CRITICAL), the dashboard's alert page, and no more escalation once a
    user acknowledges it."""
    equipment_type, rows = "generator", runaway_wear_rows(EQUIPMENT, datetime.now(UTC))
    import_equipment(platform, _fleet_csv(tmp_path, equipment_type))
    incoming = platform.home / "landing" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    drop_csv(incoming, f"{EQUIPMENT} backlog.csv", rows)

    # The ingest deployment picks the file up (on its arrival, or at the next minute).
    loaded, quarantined = wait_for(
        "the file in the ingest ledger",
        lambda: platform.sql(
            "select rows_loaded, rows_quarantined from raw.ingest_files "
            "where file_name = %s and status in ('loaded', 'partial')",
            f"{EQUIPMENT} backlog.csv",
        ),
        300,
        platform,
    )[0]
    assert (loaded, quarantined) == (len(rows), 0)
    count, newest = platform.sql(
        "select count(*), max(ts) from raw.sensor_readings where equipment_id = %s", EQUIPMENT
    )[0]
    assert count == loaded
    # Loaded by a run of the ingest deployment, which may still be lingering for more drops.
    (run_id,) = platform.sql(
        "select flow_run_id from raw.ingest_files where file_name = %s", f"{EQUIPMENT} backlog.csv"
    )[0]
    prefect = platform.prefect_api()
    run = prefect.get(f"flow_runs/{run_id}").json()
    ingest = prefect.get("deployments/name/ingest-sensor-drops/ingest-sensor-drops").json()
    assert run["deployment_id"] == ingest["id"], run

    # dbt builds its features up to the newest reading.
    wait_for(
        "features built by dbt",
        lambda: (
            platform.sql(
                "select max(ts) from analytics.fct_equipment_features where equipment_id = %s",
                EQUIPMENT,
            )[0][0]
            == newest
        ),
        300,
        platform,
    )

    # The champion scores it CRITICAL.
    champion = httpx.get(
        f"{platform.mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": "equipment-failure", "alias": "champion"},
        auth=platform.mlflow_auth(),
        timeout=10,
    ).json()["model_version"]["version"]
    prediction = wait_for(
        "a prediction for the newest features",
        lambda: platform.sql(
            "select severity, model_version, failure_probability from ops.predictions "
            "where equipment_id = %s and ts = %s",
            EQUIPMENT,
            newest,
        ),
        300,
        platform,
    )[0]
    # The test-sized model (60 equipment x 60 days) is calibrated on a handful of failures: the
    # most it gives any equipment is the share of failing rows among its surest votes, which was
    # 0.83 to 1.0 across runs with 60 trees, 0.89 to 0.99 in trials with 20 or 30. HIGH and
    # CRITICAL both alert; only CRITICAL escalates.
    severity = prediction[0]
    assert severity in ("HIGH", "CRITICAL"), f"a runaway bearing wear: {prediction}"
    assert prediction[1] == str(champion)

    # The scoring run that wrote the prediction opens one alert and one task (corrective when
    # CRITICAL, an inspection when HIGH) and mails the crew; the alert flow's trigger does not
    # start on an event whose alert was raised already.
    alerts = wait_for(
        "the alert for the generator",
        lambda: platform.sql(
            "select id, severity, status from ops.alerts where equipment_id = %s", EQUIPMENT
        ),
        300,
        platform,
    )
    assert len(alerts) == 1 and alerts[0][1] == severity
    alert_id = alerts[0][0]
    tasks = platform.sql(
        "select task_type from ops.maintenance_tasks where alert_id = %s", alert_id
    )
    assert tasks == [("corrective" if severity == "CRITICAL" else "inspection",)]

    # One email per recipient in the SMTP sink's mailbox: the site's technicians first.
    mailbox = platform.home / "mailbox"

    def alert_mail() -> list[str]:
        found = []
        for path in mailbox.glob("*.eml") if mailbox.exists() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if EQUIPMENT in str(message["Subject"]):
                found.append(str(message["To"]))
        return found

    def unsent() -> list[tuple]:
        return platform.sql(
            # The read-only user sees delivery states, not recipients.
            "select id, status from ops.notification_deliveries "
            "where alert_id = %s and channel = 'email' and status <> 'sent'",
            alert_id,
        )

    assert wait_for("the alert email", alert_mail, 240, platform) == ["alpha-techs@crews.example"]

    # Prometheus sees it too: readings, predictions, the open alert, the scoring flow's run
    # time (once its run, which sent the mail, has completed).
    flow_time = ("emps_flow_run_seconds", (("flow", "score-equipment"),))

    def scraped_with_flow_time() -> dict | None:
        scraped = _scrape_metrics(platform)
        return scraped if flow_time in scraped else None

    scraped = wait_for("the scoring flow in /metrics", scraped_with_flow_time, 120, platform)
    assert scraped[("emps_database_up", ())] == 1
    assert scraped[("emps_readings_ingested_total", ())] >= len(rows)
    assert scraped[("emps_predictions_last_hour", ())] >= 1
    assert scraped[("emps_active_alerts", (("severity", severity),))] >= 1
    assert scraped[flow_time] > 0

    # Nobody answers within EMPS_ESCALATION_DELAY_MIN (20 s here): the escalation check, run now
    # rather than at its next 5-minute tick, brings in the supervisor for a CRITICAL alert.
    def run_check_when_due() -> None:
        (waited,) = platform.sql(
            "select extract(epoch from now() - coalesce(last_notified_at, created_at)) "
            "from ops.alerts where id = %s",
            alert_id,
        )[0]
        time.sleep(max(0.0, ESCALATION_DELAY_S + 5 - float(waited)))
        run_deployment(platform, "check-critical-alerts/check-critical-alerts")

    if severity == "CRITICAL":  # only CRITICAL alerts escalate
        run_check_when_due()
        level = platform.sql("select escalation_level from ops.alerts where id = %s", alert_id)
        assert level == [(1,)]
        wait_for("the escalation email", lambda: "supervisor@crews.example" in alert_mail(), 240)

    # A user acknowledges it in the dashboard.
    _acknowledge_in_browser(platform)
    status, level = platform.sql(
        "select status, escalation_level from ops.alerts where id = %s", alert_id
    )[0]
    assert status == "acknowledged"

    # Past the escalation delay again, the check leaves it alone and queues no mail: the outbox
    # is written with the escalation, so nothing queued now means nobody else is ever mailed.
    wait_for("the escalation mail sent", lambda: not unsent(), 120, platform)
    mailed = sorted(alert_mail())
    queued = platform.sql(
        "select count(*) from ops.notification_deliveries where alert_id = %s", alert_id
    )
    run_check_when_due()
    assert platform.sql("select escalation_level from ops.alerts where id = %s", alert_id) == [
        (level,)
    ]
    assert (
        platform.sql(
            "select count(*) from ops.notification_deliveries where alert_id = %s", alert_id
        )
        == queued
    )
    assert sorted(alert_mail()) == mailed
    assert len(mailed) == len(set(mailed)), f"someone got it twice: {mailed}"


def test_readings_posted_over_http_reach_an_alert_and_an_email(platform: Platform, tmp_path):
    """A device posting a degrading generator's readings to the API that `emps up` runs and
    lists, with its own key, is answered 202, reads back `loaded`, and the readings reach an
    alert and an email to the crew as a dropped file's do."""
    equipment = "GEN-E2E-HTTP-1"
    import_equipment(platform, _fleet_csv(tmp_path, "generator", equipment))
    assert f"api reference (OpenAPI): {platform.api}/docs" in platform.output.read_text()
    status = _emps(platform, "status")
    assert status.returncode == 0, status.stdout
    assert re.search(r"\bapi\W+running\b", status.stdout) and platform.api in status.stdout, (
        status.stdout
    )
    key = _emps(platform, "devices", "add", "e2e-gateway", "-e", equipment).stdout.strip()

    rows = runaway_wear_rows(equipment, datetime.now(UTC))
    with httpx.Client(base_url=platform.api, timeout=30) as client:
        assert client.post("/api/v1/sensors/ingest", json=rows[:1]).status_code == 401
        posted = client.post(
            "/api/v1/sensors/ingest", json=rows, headers={"Authorization": f"Bearer {key}"}
        )
        assert posted.status_code == 202, posted.text
        request_id = posted.json()["id"]

        def loaded() -> dict | None:
            body = client.get(
                f"/api/v1/sensors/ingest/{request_id}", headers={"X-API-Key": key}
            ).json()
            return body if body["status"] != "accepted" else None

        outcome = wait_for("the posted readings ingested", loaded, 300, platform)
    assert (outcome["status"], outcome["readings"]) == ("loaded", len(rows)), outcome
    assert outcome["file"].startswith("e2e-gateway/")
    assert platform.sql(
        "select count(*) from raw.sensor_readings where equipment_id = %s", equipment
    ) == [(len(rows),)]

    alerts = wait_for(
        "the alert for the generator posted over HTTP",
        lambda: platform.sql(
            "select id, severity from ops.alerts where equipment_id = %s", equipment
        ),
        420,
        platform,
    )
    assert len(alerts) == 1 and alerts[0][1] in ("HIGH", "CRITICAL"), alerts
    mailed = wait_for(
        "the alert email", lambda: _mail_recipients(platform, equipment), 240, platform
    )
    assert mailed == ["alpha-techs@crews.example"]


def _emps(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    """An `emps` command as the operator runs it on the platform's machine (wide output)."""
    return subprocess.run(
        [sys.executable, "-m", "emps.cli", *args],
        env={**platform.env, "COLUMNS": "200"},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _mail_recipients(platform: Platform, equipment: str) -> list[str]:
    """Who the SMTP sink's mailbox holds a message about `equipment` for."""
    mailbox = platform.home / "mailbox"
    found = []
    for path in mailbox.glob("*.eml") if mailbox.exists() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if equipment in str(message["Subject"]):
            found.append(str(message["To"]))
    return found


def _scrape_metrics(platform: Platform) -> dict[tuple[str, tuple], float]:
    """The platform's /metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    port = platform.env["EMPS_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _fleet_csv(tmp_path: Path, equipment_type: str, equipment: str = EQUIPMENT) -> Path:
    path = tmp_path / "fleet.csv"
    commissioned = (datetime.now(UTC) - timedelta(days=400)).date().isoformat()
    path.write_text(
        "equipment_id,equipment_type,site,commissioned_at\n"
        f"{equipment},{equipment_type},{SITE},{commissioned}\n"
    )
    return path


def import_equipment(platform: Platform, fleet_csv: Path) -> None:
    """Register equipment as an admin does: `emps equipment import FLEET.csv`."""
    subprocess.run(
        [sys.executable, "-m", "emps.cli", "equipment", "import", str(fleet_csv)],
        env=platform.env,
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )


def _acknowledge_in_browser(platform: Platform) -> None:
    """Sign in at the front page, open Alerts from the sidebar, see the alert, acknowledge it."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(150_000)  # a cold Streamlit start on a busy 2-core box
            page.goto(platform.dashboard)
            page.get_by_text("EMPS — sign in").wait_for()
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Fleet overview").wait_for()
            page.get_by_test_id("stSidebarNav").get_by_text("Alerts", exact=True).click()
            # The alerts table is a canvas grid: its cells are in the DOM but not "visible".
            page.get_by_text(EQUIPMENT).first.wait_for(state="attached")
            page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
            page.get_by_label("Note").fill("crew on the way")
            page.get_by_role("button", name="Acknowledge", exact=True).click()
            page.get_by_text("acknowledged.").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "alerts-acknowledged.png"), full_page=True)
        finally:
            browser.close()


def test_the_first_start_shows_its_steps_not_the_flow_runs_logs(platform: Platform):
    """The first start's console says what it did (the first scores among it); the scoring
    flow's log lines (dbt's node by node among them) stay in the Prefect UI."""
    start = platform.output.read_text().split("EMPS is up")[0]
    assert re.search(r"scored \d+ equipment with model v1", start), start[-3000:]
    logged = [
        line
        for line in start.splitlines()
        if re.match(r"(DEBUG|INFO):", line) or re.search(r"\| (DEBUG|INFO) +\|", line)
    ]
    assert not logged, logged[:5]


def test_cron_schedules_run_in_the_platform_time_zone(platform: Platform):
    """The daily report, retention and weekly retraining fire at their hours in EMPS_TIMEZONE
    (Europe/Paris here), not in UTC: the schedules Prefect runs carry that time zone."""
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    cron = [
        d["name"]
        for d in spec["deployments"]
        if any("cron" in schedule for schedule in d.get("schedules") or [])
    ]
    assert "send-daily-maintenance-report" in cron
    prefect = platform.prefect_api()
    for name in cron:
        dep = prefect.get(f"deployments/name/{name}/{name}").json()
        zones = [s["schedule"]["timezone"] for s in dep["schedules"] if "cron" in s["schedule"]]
        assert zones == ["Europe/Paris"], f"{name}: {zones}"


def test_strangers_are_refused_everywhere_but_the_sign_in_page(platform: Platform):
    """Without credentials, the Prefect API (and with them but without a CSRF token, its
    changes), the MLflow API and the database refuse; cross-origin calls to Prefect from
    another site get no permission."""
    anonymous = httpx.get(f"{platform.prefect}/admin/settings", timeout=10)
    assert anonymous.status_code == 401
    # A change without credentials: refused (by the CSRF check, which runs first, or the auth).
    change = httpx.post(f"{platform.prefect}/flow_runs/filter", json={}, timeout=10)
    assert change.status_code in (401, 403)
    user, password = platform.secrets()["prefect_auth"].split(":", 1)
    no_csrf = httpx.post(
        f"{platform.prefect}/deployments/filter", json={}, auth=(user, password), timeout=10
    )
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    preflight = httpx.options(
        f"{platform.prefect}/flow_runs/filter",
        headers={"Origin": "https://attacker.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.headers.get("access-control-allow-origin") != "https://attacker.example"
    mlflow = httpx.get(f"{platform.mlflow}/api/2.0/mlflow/experiments/search", timeout=10)
    assert mlflow.status_code == 401
    for user in ("postgres", "emps_reader", "emps_prefect"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host="127.0.0.1", port=int(platform.env["EMPS_PG_PORT"]), user=user, dbname="emps"
            )


def test_a_killed_database_is_restarted_and_ingest_resumes(platform: Platform, tmp_path):
    """When the embedded PostgreSQL is killed (SIGKILL, as the OOM killer does), `emps up`
    restarts it and says so: a file dropped while it is down is ingested once it is back, and
    every reading loaded before is still there, none twice."""
    equipment = "GEN-E2E-0002"
    import_equipment(platform, _fleet_csv(tmp_path, "generator", equipment))
    # Two healthy days of a generator, a week ago: one file before the kill, one during it.
    rows = runaway_wear_rows(equipment, datetime.now(UTC) - timedelta(days=7))
    before, during = rows[: len(rows) // 3], rows[len(rows) // 3 : 2 * len(rows) // 3]
    incoming = platform.home / "landing" / "incoming"
    names = [f"{equipment} before.csv", f"{equipment} during.csv"]

    def loaded(name: str) -> list[tuple]:
        """The file's ledger rows once ingest is done with it (none while the database is
        down)."""
        try:
            return platform.sql(
                "select status, rows_loaded from raw.ingest_files "
                "where file_name = %s and status <> 'claimed'",
                name,
            )
        except psycopg.OperationalError:
            return []

    drop_csv(incoming, names[0], before)
    assert wait_for("the file before the kill", lambda: loaded(names[0]), 240, platform) == [
        ("loaded", len(before))
    ]
    (readings,) = platform.sql("select count(*) from raw.sensor_readings")[0]

    # The postmaster dies while ingest runs (it lingers for the next drops), holding connections.
    pidfile = next(platform.home.glob("pg/*/postmaster.pid"))
    killed = int(pidfile.read_text().splitlines()[0])
    os.kill(killed, signal.SIGKILL)
    drop_csv(incoming, names[1], during)

    assert wait_for(
        "the file dropped during the outage", lambda: loaded(names[1]), 300, platform
    ) == [("loaded", len(during))]
    output = " ".join(platform.output.read_text().split())
    assert f"postgresql stopped (pid {killed} is gone); restarting (1/" in output
    assert "postgresql is back" in output
    assert int(pidfile.read_text().splitlines()[0]) != killed
    assert platform.sql("select count(*) from raw.sensor_readings") == [(readings + len(during),)]
    assert platform.sql(
        "select count(*), count(distinct ts) from raw.sensor_readings where equipment_id = %s",
        equipment,
    ) == [(len(before) + len(during),) * 2]
    assert platform.sql(
        "select file_name, count(*) from raw.ingest_files where file_name = any(%s) "
        "group by file_name order by file_name",
        names,
    ) == [(name, 1) for name in names]
    status = subprocess.run(
        [sys.executable, "-m", "emps.cli", "status"],
        env={**platform.env, "COLUMNS": "200"},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stdout
    (row,) = [line for line in status.stdout.splitlines() if "postgresql" in line]
    assert row.split("│")[2].strip() == "running" and row.split("│")[5].strip() == "1", row


def test_ctrl_c_leaves_nothing_running(platform: Platform):
    """Stopping `emps up` with Ctrl-C stops every service it started, PostgreSQL included."""
    os.killpg(platform.process.pid, signal.SIGINT)
    assert platform.process.wait(timeout=180) == 0, platform.output.read_text()[-3000:]
    time.sleep(2)
    ports = {int(v) for k, v in platform.env.items() if k.endswith("_PORT") and v.isdigit()}
    listening = [
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    ]
    assert not listening, f"still listening on {listening}"
    leftovers = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if str(platform.home) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, leftovers
    assert not (platform.home / "run" / "services.json").exists()
