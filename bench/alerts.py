"""Alert latency (CRITICAL prediction written -> email accepted by SMTP) through the Prefect
deployment trigger, and the outbox sender's throughput next to a raw aiosmtplib loop.

    uv run python bench/alerts.py [--alerts 50] [--interval 2.0] [--messages 500]

Runs on a fresh temporary embedded PostgreSQL, a temporary Prefect server (prefect_test_harness),
an aiosmtpd sink and a Runner serving process-prediction-alerts with its prefect.yaml trigger (in
a child process: the Runner spawns one process per flow run in any case). One CRITICAL prediction
is written and its event emitted every --interval seconds, for --alerts equipment; latency is
measured from just before the prediction INSERT to the sink accepting the mail.
Last line: {"bench": "alerts", "pred_to_email_p50_s": ..., "pred_to_email_p95_s": ...,
"sender_msgs_s": ..., "raw_msgs_s": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from _tempdb import ROOT, temporary_platform

from emps.processes import free_port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def flow_run_stages(get_client, written_at: dict[str, float]) -> list[tuple]:
    """(written -> run created, created -> started, started -> ended) per triggered run."""
    async with get_client() as client:
        runs = await client.read_flow_runs()
    stages = []
    for run in runs:
        equipment_id = (run.parameters.get("payload") or {}).get("equipment_id")
        if equipment_id not in written_at or not (run.start_time and run.end_time):
            continue
        created = run.created.timestamp()
        stages.append(
            (
                created - written_at[equipment_id],
                run.start_time.timestamp() - created,
                run.end_time.timestamp() - run.start_time.timestamp(),
            )
        )
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0, help="Seconds between predictions")
    parser.add_argument("--messages", type=int, default=500, help="Messages for the throughput")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    smtp_port = free_port()
    environment = {
        "EMPS_SMTP_PORT": str(smtp_port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "DO_NOT_TRACK": "1",
    }
    with temporary_platform("alerts", environment) as platform:
        crew = platform.home / "recipients.yaml"
        crew.write_text(
            "escalation: [technician]\npeople:\n"
            "  - {name: Bench crew, role: technician, sites: ['*'], email: crew@bench.example}\n"
        )
        os.environ["EMPS_RECIPIENTS_PATH"] = str(crew)
        os.environ["PREFECT_HOME"] = str(platform.home / "prefect")
        run(args, platform.home, smtp_port)


def run(args: argparse.Namespace, home: Path, smtp_port: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from emps.alerting.mailbox import MailboxHandler
    from emps.alerting.outbox import enqueue_email, send_notifications
    from emps.db import Role, connect
    from emps.settings import get_settings

    class TimedMailbox(MailboxHandler):
        """Records when each subject was accepted."""

        def __init__(self, directory: Path):
            super().__init__(directory)
            self.accepted_at: dict[str, float] = {}

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            reply = await super().handle_DATA(server, session, envelope)
            subject = next(
                (
                    line.split(b":", 1)[1].strip().decode()
                    for line in envelope.content.splitlines()
                    if line.lower().startswith(b"subject:")
                ),
                "",
            )
            self.accepted_at.setdefault(subject, time.time())
            return reply

    from aiosmtpd.controller import Controller

    settings = get_settings()
    handler = TimedMailbox(home / "mailbox")
    sink = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    sink.start()
    runner = None
    try:
        ids = [f"BENCH-{i:04d}" for i in range(args.alerts)]
        with connect(Role.OWNER, settings) as conn:
            for equipment_id in ids:
                conn.execute(
                    "insert into raw.equipment (equipment_id, equipment_type, site)"
                    " values (%s, 'generator', 'BENCH')",
                    (equipment_id,),
                )
        print("starting a temporary Prefect server ...", flush=True)
        with prefect_test_harness(server_startup_timeout=180):
            env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
            runner = subprocess.Popen(
                [sys.executable, "-m", "emps.flows.serving"], env=env, cwd=ROOT
            )

            async def automation_ready() -> bool:
                async with get_client() as client:
                    return any(
                        a.name.startswith("process-prediction-alerts")
                        for a in await client.read_automations()
                    )

            deadline = time.monotonic() + args.timeout
            while not asyncio.run(automation_ready()):
                if time.monotonic() > deadline:
                    raise SystemExit("the alert deployment never registered its trigger")
                time.sleep(0.5)
            print(f"deployment served; {args.alerts} CRITICAL predictions ...", flush=True)

            written_at: dict[str, float] = {}
            with connect(Role.SCORING, settings, autocommit=True) as conn:
                for equipment_id in ids:
                    written_at[equipment_id] = time.time()
                    ts = datetime.now(UTC)
                    pid = conn.execute(
                        "insert into ops.predictions (equipment_id, ts, failure_probability,"
                        " health_score, severity, days_until_failure, model_version)"
                        " values (%s, %s, 0.93, 7, 'CRITICAL', 2.0, 'bench') returning id",
                        (equipment_id, ts),
                    ).fetchone()[0]
                    emit_event(
                        event="emps.prediction.critical",
                        resource={"prefect.resource.id": f"equipment.{equipment_id}"},
                        payload={
                            "prediction_id": pid,
                            "prediction_ts": ts.isoformat(),
                            "equipment_id": equipment_id,
                            "failure_probability": 0.93,
                            "severity": "CRITICAL",
                            "days_until_failure": 2.0,
                            "model_version": "bench",
                        },
                    )
                    time.sleep(args.interval)
            while len(handler.accepted_at) < args.alerts and time.monotonic() < deadline:
                time.sleep(0.5)
            stages = asyncio.run(flow_run_stages(get_client, written_at))
            # Runs the trigger created after an earlier run already sent their mail would
            # otherwise start against a server that is shutting down.
            stop(runner)
        latencies = []
        for equipment_id in ids:
            accepted = next(
                (t for s, t in handler.accepted_at.items() if f"] {equipment_id} at" in s), None
            )
            if accepted is not None:
                latencies.append(accepted - written_at[equipment_id])
        if stages:
            print(
                "where the time goes (p50): event -> flow run created"
                f" {statistics.median(s[0] for s in stages):.1f} s, created -> running"
                f" {statistics.median(s[1] for s in stages):.1f} s, running -> done"
                f" {statistics.median(s[2] for s in stages):.1f} s",
                flush=True,
            )
        missing = args.alerts - len(latencies)
        print(
            f"prediction -> email: {len(latencies)} of {args.alerts} mails"
            f"{f' ({missing} MISSING)' if missing else ''}; "
            f"min {min(latencies):.1f} s, p50 {statistics.median(latencies):.1f} s,"
            f" p95 {percentile(latencies, 0.95):.1f} s, max {max(latencies):.1f} s",
            flush=True,
        )

        # Sender throughput: N queued emails through the outbox vs the same N raw.
        with connect(Role.ALERTING, settings) as conn, conn.transaction():
            for i in range(args.messages):
                enqueue_email(
                    conn,
                    to=f"crew{i % 10}@bench.example",
                    subject=f"throughput {i}",
                    text="x" * 600,
                    html="<p>" + "x" * 600 + "</p>",
                    key=f"bench/{i}",
                    event="bench",
                )
        began = time.perf_counter()
        report = send_notifications(settings, limit=args.messages)
        sender_s = time.perf_counter() - began
        assert report.sent == args.messages, report

        async def raw_loop() -> float:
            import aiosmtplib

            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False)
            await smtp.connect()
            began = time.perf_counter()
            for i in range(args.messages):
                msg = EmailMessage()
                msg["From"] = settings.notifications.mail_from
                msg["To"] = f"crew{i % 10}@bench.example"
                msg["Subject"] = f"raw {i}"
                msg["Message-ID"] = f"<raw-{i}@bench>"
                msg.set_content("x" * 600)
                msg.add_alternative("<p>" + "x" * 600 + "</p>", subtype="html")
                await smtp.send_message(msg)
            elapsed = time.perf_counter() - began
            await smtp.quit()
            return elapsed

        raw_s = asyncio.run(raw_loop())
        sender_rate, raw_rate = args.messages / sender_s, args.messages / raw_s
        print(
            f"sender: {args.messages} mails in {sender_s:.2f} s ({sender_rate:.0f}/s, claim +"
            f" mark sent per message); raw aiosmtplib loop: {raw_s:.2f} s ({raw_rate:.0f}/s)",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "bench": "alerts",
                    "pred_to_email_p50_s": round(statistics.median(latencies), 2),
                    "pred_to_email_p95_s": round(percentile(latencies, 0.95), 2),
                    "sender_msgs_s": round(sender_rate, 1),
                    "raw_msgs_s": round(raw_rate, 1),
                }
            )
        )
    finally:
        stop(runner)
        sink.stop()


def stop(runner: subprocess.Popen | None) -> None:
    if runner is not None and runner.poll() is None:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
