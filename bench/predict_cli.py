"""`emps predict` wall time per call: through a warm HTTP API vs scoring in its own process.

    uv run python bench/predict_cli.py [--equipment 200] [--runs 5]

On a fresh temporary database and MLflow store: a champion trained on synthetic examples, one
feature row per bench equipment, the API served by uvicorn (`python -m emps.api`) and warmed by
one request. Then, each `--runs` times as a new process (what a shell user waits for):
"api" `emps predict ID --json` with a saved user token; "local" `emps predict ID --json --local`
(imports, model load, prediction in the process); "api_all" `emps predict --all --json`; and
"bare" `python -c pass`, the floor of any process start. Medians. Last line:
{"bench": "predict_cli", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _champion import champion_and_features
from _tempdb import temporary_platform

from emps import processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equipment", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with temporary_platform("predict-cli", {"EMPS_ML_N_ESTIMATORS": "100"}) as platform:
        run(args, platform.settings)


def _timed(command: list[str], env: dict[str, str], runs: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
        out = done.stdout
    return statistics.median(times), out


def run(args: argparse.Namespace, settings) -> None:
    import httpx

    from emps.commands.predict import save_token
    from emps.db import Role, connect
    from emps.users import add_user, mint_token

    champion_and_features(settings, args.equipment, equipment=30, days=100, step_hours=4)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        add_user(conn, "bench", "Viewer", "a long enough password", rounds=4)
        token = mint_token(conn, "bench", "bench", 1)[0]
    token_file = Path(settings.home) / "bench-token"
    save_token(token, settings.replace(api={"token_file": token_file}))

    port = processes.free_port()
    env = {
        **os.environ,
        "EMPS_API_PORT": str(port),
        "EMPS_API_TOKEN_FILE": str(token_file),
    }
    with processes.serving(
        "the API",
        [sys.executable, "-m", "emps.api"],
        port,
        "/health",
        Path(settings.home) / "api.log",
        env,
        grace_s=30,
    ) as api:
        warm = httpx.post(
            f"{api.url}/api/v1/predictions/predict",
            json={"equipment_ids": ["BEN-00000"]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        warm.raise_for_status()

        emps = str(Path(sys.executable).with_name("emps"))
        one = [emps, "predict", "BEN-00000", "--json"]
        print(f"timing {args.runs} runs of each ...", flush=True)
        bare, _ = _timed([sys.executable, "-c", "pass"], env, args.runs)
        through_api, api_out = _timed(one, env, args.runs)
        local, local_out = _timed([*one, "--local"], env, args.runs)
        every, every_out = _timed([emps, "predict", "--all", "--json"], env, args.runs)
    same = (
        json.loads(api_out)["failure_probability"] == json.loads(local_out)["failure_probability"]
    )
    assert same, "the API and the local prediction differ"
    assert len(every_out.splitlines()) == args.equipment
    print(
        f"emps predict, median of {args.runs} new processes: through the API {through_api:.3f} s, "
        f"in-process {local:.3f} s, --all ({args.equipment} equipment) through the API "
        f"{every:.3f} s; python -c pass {bare:.3f} s"
    )
    print(
        json.dumps(
            {
                "bench": "predict_cli",
                "equipment": args.equipment,
                "runs": args.runs,
                "api_s": round(through_api, 3),
                "local_s": round(local, 3),
                "api_all_s": round(every, 3),
                "bare_python_s": round(bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
