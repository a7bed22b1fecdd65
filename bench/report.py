"""Keep the benches' figures, and write the docs page from them.

    uv run python bench/NAME.py | uv run python bench/report.py record NAME [--note TEXT]
    uv run python bench/report.py render            # writes docs/benchmarks.md

`record` passes the bench's output through and appends its last line (the JSON object every
bench ends with) to bench/results/NAME.jsonl, with the date, the commit and a note (say what
the machine was doing). `render` writes docs/benchmarks.md: per bench, every recorded run's
figures next to the target each is judged against. The measured figures live there, not in the
README.
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
PAGE = HERE.parent / "docs" / "benchmarks.md"

# What each bench measures, and the figures the issues set targets for: (key, target, sense).
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


def _cell(value, target: float | None, sense: str) -> str:
    if value is None:
        return "–"
    text = json.dumps(value) if isinstance(value, list | bool) else f"{value:g}"
    if target is None or not isinstance(value, int | float) or isinstance(value, bool):
        return text
    met = value >= target if sense == ">=" else value <= target
    return f"{text} {'✓' if met else '✗'}"


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/report.py render` from bench/results/*.jsonl; every figure",
        "is a bench's last JSON line as recorded (`bench/report.py record`). ✓/✗: against the",
        "target in the column head. Notes say what else the machine was running.",
        "",
    ]
    recorded = sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    for name in [*BENCHES, *(n for n in recorded if n not in BENCHES)]:
        path = RESULTS / f"{name}.jsonl"
        about, keys = BENCHES.get(name, (f"bench/{name}.py", []))
        lines += [f"## {name}", "", about, ""]
        if not path.exists():
            lines += ["No run recorded yet.", ""]
            continue
        runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not keys:  # a bench without targets here: its first figures
            keys = [(k, None, "") for k in list(runs[-1]["figures"])[1:7]]
        heads = [f"{k} ({s} {t:g})" if t is not None else k for k, t, s in keys]
        lines.append("| date | commit | " + " | ".join(heads) + " | note |")
        lines.append("|---" * (len(keys) + 3) + "|")
        for run in runs:
            cells = [_cell(run["figures"].get(k), t, s) for k, t, s in keys]
            lines.append(
                f"| {run['date']} | {run['commit']} | " + " | ".join(cells) + f" | {run['note']} |"
            )
        lines += ["", "<details><summary>every figure of the latest run</summary>", ""]
        lines += ["```json", json.dumps(runs[-1]["figures"], indent=1), "```", "</details>", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("record", help="append a bench's JSON line (read from stdin)")
    add.add_argument("name", help="the bench's name (bench/NAME.py)")
    add.add_argument("--note", default="", help="what the machine was doing")
    add.add_argument("--commit", help="the commit measured, when not this checkout's HEAD")
    commands.add_parser("render", help="write docs/benchmarks.md")
    args = parser.parse_args()
    if args.command == "record":
        record(args.name, args.note, args.commit)
    else:
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_text(render(), encoding="utf-8")
        print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
