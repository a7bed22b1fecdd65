"""Keep the benches' figures, and write the performance page from them.

    uv run python bench/NAME.py | uv run python bench/report.py record NAME [--note TEXT]
    uv run python bench/report.py render            # writes docs/performance.md

`record` passes the bench's output through and appends its last line (the JSON object every
bench ends with) to bench/results/NAME.jsonl, with the date, the commit and a note (say what
the machine was doing). `render` writes docs/performance.md from those lines only: a summary of
every target, then per bench its latest run's figures against their targets, with the run's
note and commit, every earlier run, and every figure of the latest run. Measured figures live
there, not in prose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE.parent / "docs" / "performance.md"

# What each bench measures, and its headline figures with their targets: (key, target, sense).
# Targets are the product's (the original specification's and the design's); None: no target.
BENCHES: dict[str, tuple[str, list[tuple[str, float | None, str]]]] = {
    "ingest": (
        "One CSV drop of 100,000 readings through the whole ingest path, next to a raw COPY.",
        [("ratio", 0.5, ">="), ("ours_rows_s", None, ""), ("copy_rows_s", None, "")],
    ),
    "features": (
        "Incremental feature build after one minute of readings (dbt start-up included).",
        [
            ("incremental_1k_s", None, ""),
            ("incremental_10k_s", 10.0, "<="),
            ("incremental_1k_after_bulk_s", None, ""),
            ("after_bulk_bound_vs_margin", None, ""),
            ("full_rebuild_10k_s", None, ""),
        ],
    ),
    "e2e": (
        "The whole platform as `emps up` runs it: drop-to-email latency, memory, 10k keep-up.",
        [
            ("scheduled_p95_s", 90.0, "<="),
            ("arrival_p95_s", 20.0, "<="),
            ("peak_rss_mb", 2048.0, "<="),
            ("keeps_up_10k", None, ""),
        ],
    ),
    "fleet_quality": (
        "A fleet pack through import, full build, training and evaluation.",
        [
            ("readings", None, ""),
            ("rul_rmse_capped", None, ""),
            ("baseline_rul_rmse_capped", None, ""),
            ("rul_rmse_capped_vs_baseline", 0.9, "<="),
            ("total_s", 1200.0, "<="),
            ("import_vs_copy", None, ""),
            ("failures_warned_share", None, ""),
        ],
    ),
    "model_quality": (
        "Simulated fleets over several seeds: failures warned at the alerting band.",
        [
            ("heldout_warned_failures", 100.0, ">="),
            ("failures_warned_share", 0.85, ">="),
            ("failures_warned_share_ci95", None, ""),
            ("false_alert_episodes_per_100_equipment_months", 2.0, "<="),
            ("rul_mae_days_displayed", None, ""),
            ("rul_mae_naive_days", None, ""),
        ],
    ),
    "api": (
        "The HTTP API under 20 client connections, next to a bare endpoint on the same server.",
        [
            ("ingest_rps", 1000.0, ">="),
            ("ingest_p95_ms", 100.0, "<="),
            ("ingest_batch_readings_s", None, ""),
            ("predict_p95_ms", 50.0, "<="),
            ("predict_rps", 500.0, ">="),
            ("overview_p95_ms", 500.0, "<="),
            ("bare_rps", None, ""),
            ("ingest_lost", 0.0, "<="),
        ],
    ),
    "predict_cli": (
        "`emps predict` per call: through a warm API next to scoring in its own process.",
        [
            ("api_s", 1.0, "<="),
            ("local_s", None, ""),
            ("api_all_s", None, ""),
            ("bare_python_s", None, ""),
        ],
    ),
    "score": (
        "Scoring the whole fleet as score-equipment does, next to the forest's bare predict; "
        "one `emps predict` in a warm process.",
        [
            ("equipment", None, ""),
            ("ours_s", None, ""),
            ("bare_predict_s", None, ""),
            ("ratio", None, ""),
            ("single_p50_ms", None, ""),
            ("single_p95_ms", 50.0, "<="),
        ],
    ),
    "dashboard": (
        "Server-side time of each dashboard page's data queries, at 10,000 equipment.",
        [
            ("equipment", None, ""),
            ("worst_page_ms", 500.0, "<="),
            ("refresh_s", None, ""),
        ],
    ),
    "alerts": (
        "A CRITICAL prediction to its email through the alert deployment's trigger; the outbox "
        "sender next to a raw SMTP loop.",
        [
            ("pred_to_email_p50_s", None, ""),
            ("pred_to_email_p95_s", 300.0, "<="),
            ("sender_msgs_s", None, ""),
            ("raw_msgs_s", None, ""),
        ],
    ),
    "backfill": (
        "Simulated history backfill (`emps simulate backfill`) next to a raw binary COPY.",
        [("rows", None, ""), ("ours_rows_s", None, ""), ("ratio", None, "")],
    ),
}


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(name: str, note: str, commit: str | None = None) -> None:
    last = ""
    for line in sys.stdin:
        sys.stdout.write(line)
        if line.strip():
            last = line.strip()
    try:
        figures = json.loads(last)
    except json.JSONDecodeError:
        sys.exit(f"the last line of {name}'s output is not its JSON result: {last[:200]!r}")
    entry = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or _commit(),
        "note": note,
        "figures": figures,
    }
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{name}.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


SENSE = {">=": "≥", "<=": "≤"}


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    return f"{value:.4g}"


def _holds(value, target: float | None, sense: str) -> str:
    """'yes' or 'no' against the target; '' with no target or nothing to judge."""
    if target is None or isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    return "yes" if (value >= target if sense == ">=" else value <= target) else "no"


def _target(target: float | None, sense: str) -> str:
    return f"{SENSE[sense]} {_number(target)}" if target is not None else ""


def _text(note: str) -> str:
    return note.replace("|", "\\|").replace("\n", " ")


def _runs(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keys(name: str, runs: list[dict]) -> list[tuple[str, float | None, str]]:
    keys = BENCHES.get(name, ("", []))[1]
    if not keys and runs:  # a bench without an entry here: its first figures
        keys = [(k, None, "") for k in list(runs[-1]["figures"])[1:7]]
    return keys


def _about(name: str) -> str:
    about = BENCHES.get(name, ("", []))[0]
    return f"`bench/{name}.py`: {about}" if about else f"`bench/{name}.py`."


def render() -> str:
    recorded = sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    names = [*BENCHES, *(n for n in recorded if n not in BENCHES)]
    lines = [
        "# Performance",
        "",
        "Generated by `bench/report.py render` (`make bench` runs it) from the JSON lines in",
        "`bench/results/`; do not edit it by hand. Each bench prints its figures and ends with one",
        "JSON object, which `bench/report.py record` appends with the date, the commit measured",
        "and a note saying what else the machine was doing. Targets are the product's (the",
        "original specification's and the design's): reported, never tuned for. How to run the",
        "benches: [testing](testing.md#benchmarks).",
        "",
        "## Summary",
        "",
        "Each target against the latest recorded run of its bench.",
        "",
        "| bench | figure | target | latest | holds | run |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = _runs(name)
        targeted = [(k, t, s) for k, t, s in _keys(name, runs) if t is not None]
        if not runs:
            lines.append(f"| [{name}](#{name}) | | | not recorded yet | | |")
            continue
        latest = runs[-1]
        when = f"{latest['date'][:10]}, {latest['commit']}"
        for key, target, sense in targeted:
            value = latest["figures"].get(key)
            shown = "not measured" if value is None else _number(value)
            holds = _holds(value, target, sense)
            lines.append(
                f"| [{name}](#{name}) | {key} | {_target(target, sense)} | {shown} | {holds} "
                f"| {when} |"
            )
    lines.append("")
    for name in names:
        runs = _runs(name)
        keys = _keys(name, runs)
        lines += [f"## {name}", "", _about(name), ""]
        if not runs:
            lines += ["No run recorded yet.", ""]
            continue
        latest = runs[-1]
        lines += [
            f"Latest run: {latest['date']}, commit {latest['commit']}. "
            f"Note: {_text(latest['note']) or '(none)'}.",
            "",
            "| figure | target | latest | holds |",
            "|---|---|---|---|",
        ]
        for key, target, sense in keys:
            value = latest["figures"].get(key)
            shown = "not measured" if value is None else _number(value)
            lines.append(
                f"| {key} | {_target(target, sense)} | {shown} | {_holds(value, target, sense)} |"
            )
        lines += ["", f"<details><summary>every recorded run ({len(runs)})</summary>", ""]
        heads = [f"{k} ({_target(t, s)})" if t is not None else k for k, t, s in keys]
        lines.append("| date | commit | " + " | ".join(heads) + " | note |")
        lines.append("|---" * (len(keys) + 3) + "|")
        for run in runs:
            cells = []
            for key, target, sense in keys:
                value = run["figures"].get(key)
                holds = _holds(value, target, sense)
                mark = {"yes": " ✓", "no": " ✗"}.get(holds, "")
                cells.append("–" if value is None else _number(value) + mark)
            lines.append(
                f"| {run['date']} | {run['commit']} | "
                + " | ".join(cells)
                + f" | {_text(run['note'])} |"
            )
        lines += [
            "",
            "</details>",
            "",
            "<details><summary>every figure of the latest run</summary>",
            "",
        ]
        lines += ["```json", json.dumps(latest["figures"], indent=1), "```", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("record", help="append a bench's JSON line (read from stdin)")
    add.add_argument("name", help="the bench's name (bench/NAME.py)")
    add.add_argument("--note", default="", help="what the machine was doing")
    add.add_argument("--commit", help="the commit measured, when not this checkout's HEAD")
    commands.add_parser("render", help="write docs/performance.md")
    args = parser.parse_args()
    if args.command == "record":
        record(args.name, args.note, args.commit)
    else:
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_text(render(), encoding="utf-8")
        print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
