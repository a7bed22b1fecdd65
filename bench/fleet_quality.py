"""Fleet quality: any fleet pack through the whole path (import, full feature build, training,
evaluation) in a temporary home, with the remaining-life error next to a floor the platform's
own model must beat, and how fast the history came in next to a raw COPY of the same rows.

    uv run python bench/fleet_quality.py PACK [--rul-cap 125] [--trees N]
    uv run python bench/fleet_quality.py --equipment 1000 --days 90 --interval 600

Without PACK, `emps simulate pack` writes the built-in simulator's fleet first (--equipment,
--days, --interval): the default is small; the line above is the ~13 M-reading history whose
import + build + training should take at most 20 minutes on a 2-core machine.

Steps, each timed: `emps fleet import` (the pack's catalog installed, readings through the
ingest path), a full `dbt build`, `emps model train` (emps.ml.train.retrain: a run-to-failure
history is judged by a grouped k-fold over all units, a fleet in service by its report slice), the
evaluation's event-level figures (emps.ml.evaluate, the functions `emps model evaluate` uses).

Remaining life, in each type's life unit, capped at --rul-cap (EMPS_ML_RUL_CAP):
- with test units (a pack's `test/`, cut before failing, their true remaining life in
  test/rul.csv): each test unit's last feature row scored by the trained model;
- otherwise the held-out units at every row, as training evaluated them.
`rul_rmse` is against the true remaining life, `rul_rmse_capped` against the truth capped at the
cap. `baseline_rul_rmse_capped`: a RandomForest regressor fitted in the same run on the raw
window means of the sensors (the type's longest window, no regime normalisation, no other
feature) on the same training units, scored on the same units: the floor.

`import_rows_s` is readings per second through `emps fleet import`; `copy_rows_s` the same rows
by a plain COPY into a table of the same shape (the raw baseline), measured in the same run.

Last line: {"bench": "fleet_quality", "pack": ..., "equipment": ..., "readings": ...,
"failures": ..., "failures_heldout": ..., "test_units": ..., "life_unit": ..., "rul_cap": ...,
"rul_rmse": ..., "rul_rmse_capped": ..., "baseline_rul_rmse_capped": ...,
"rul_rmse_capped_vs_baseline": ..., "import_s", "build_s", "train_s", "total_s",
"import_rows_s", "copy_rows_s", "import_vs_copy": ..., plus the evaluation's figures:
"failures_warned_share", "failures_warned_share_ci95", "median_lead", "false_alert_episodes_per_100_equipment_months",
"alerts_per_week", "rul_mae_displayed", "rul_mae_naive", "pr_auc", "brier"}.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _tempdb import ROOT, temporary_platform
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

EVALUATION_KEYS = (
    "failures_evaluated",
    "failures_warned_share",
    "median_lead",
    "false_alert_episodes_per_100_equipment_months",
    "alerts_per_week",
    "rul_mae_displayed",
    "rul_mae_naive",
    "pr_auc",
    "brier",
)


def simulated_pack(args, out: Path, console: Console) -> Path:
    """The built-in simulator's fleet written as a pack, through `emps simulate pack`."""
    console.print(
        f"[bold]writing a simulated pack[/]: {args.equipment} equipment x {args.days} days, "
        f"a reading every {args.interval} s"
    )
    command = [str(Path(sys.executable).with_name("emps")), "simulate", "pack", str(out)]
    command += ["--equipment", str(args.equipment), "--days", str(args.days)]
    command += ["--interval", str(args.interval), "--seed", str(args.seed)]
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def raw_copy_rate(settings, console: Console) -> tuple[int, float]:
    """(rows, rows per second) of a plain COPY of every stored reading into an unlogged table
    of the same shape: the fastest the database takes these rows, to compare the import with."""
    from emps.db import Role, connect

    with connect(Role.OWNER, settings, autocommit=True) as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy("copy (select * from raw.sensor_readings) to stdout") as copy:
            for chunk in copy:
                buffer.write(chunk)
        rows = conn.execute("select count(*) from raw.sensor_readings").fetchone()[0]
        conn.execute(
            "create unlogged table public.copy_baseline "
            "(like raw.sensor_readings including defaults)"
        )
        began = time.perf_counter()
        with conn.cursor().copy("copy public.copy_baseline from stdin") as copy:
            view = buffer.getbuffer()
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        seconds = time.perf_counter() - began
        conn.execute("drop table public.copy_baseline")
    console.print(f"raw COPY of {rows:,} readings: {seconds:.1f} s")
    return rows, rows / seconds if seconds else float("nan")


def window_means(settings, catalog, keys: pd.DataFrame) -> pd.DataFrame:
    """For each (equipment_id, ts) of `keys`: the plain mean of each raw sensor reading over the
    type's longest window ending at ts. No slots, regimes or baselines: the baseline's inputs."""
    from emps.db import Role, connect

    sensors = catalog.sensor_names
    ids = sorted(keys["equipment_id"].unique())
    with connect(Role.OWNER, settings) as conn, conn.cursor() as cur:
        query = sql.SQL(
            "select r.equipment_id, e.equipment_type, r.ts, {} from raw.sensor_readings r "
            "join raw.equipment e using (equipment_id) where r.equipment_id = any(%s) "
            "order by r.equipment_id, r.ts"
        ).format(sql.SQL(", ").join(sql.Identifier("r", s) for s in sensors))
        cur.execute(query, (ids,))
        readings = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    readings[sensors] = readings[sensors].astype(float)
    parts = []
    for equipment_type, rows in readings.groupby("equipment_type", sort=False):
        etype = catalog.equipment_types[equipment_type]
        window = pd.Timedelta(seconds=etype.slot_seconds * etype.features.windows[-1])
        means = (
            rows.set_index("ts")
            .groupby("equipment_id", sort=False)[sensors]
            .rolling(window)
            .mean()
            .reset_index()
        )
        parts.append(means)
    means = pd.concat(parts)
    means["ts"] = pd.to_datetime(means["ts"], utc=True)
    means = means.sort_values("ts")
    keys = keys[["equipment_id", "ts"]].assign(ts=lambda k: pd.to_datetime(k["ts"], utc=True))
    keys = keys.sort_values("ts")
    return pd.merge_asof(keys, means, on="ts", by="equipment_id").set_index(keys.index)


def baseline_rmse(
    settings,
    catalog,
    train: pd.DataFrame,
    test: pd.DataFrame,
    truth: np.ndarray,
    cap: np.ndarray,
    trees: int,
) -> float:
    """RMSE (truth and estimate capped) of a RandomForest regressor on raw window means, fitted
    on `train` rows (known remaining life, or censored past the cap) and scored on `test`."""
    from sklearn.ensemble import RandomForestRegressor

    from emps.ml.evaluate import remaining_life_truth

    sensors = catalog.sensor_names
    life, censored = remaining_life_truth(train, catalog)
    train_cap = cap_per_row(train, catalog, settings)
    known = ~censored | (life >= train_cap)
    x_train = window_means(settings, catalog, train[known]).reindex(columns=sensors)
    y_train = np.minimum(life[known], train_cap[known])
    x_test = window_means(settings, catalog, test).reindex(columns=sensors)
    forest = RandomForestRegressor(
        n_estimators=trees, min_samples_leaf=5, n_jobs=settings.ml.n_jobs, random_state=0
    )
    forest.fit(x_train.fillna(x_train.mean()).fillna(0.0), y_train)
    estimate = np.minimum(forest.predict(x_test.fillna(x_train.mean()).fillna(0.0)), cap)
    return float(np.sqrt(np.mean((estimate - np.minimum(truth, cap)) ** 2)))


def cap_per_row(rows: pd.DataFrame, catalog, settings) -> np.ndarray:
    from emps.ml.train import rul_cap

    caps = {t: rul_cap(catalog.equipment_types[t], settings) for t in catalog.type_names}
    return rows["equipment_type"].map(caps).to_numpy(dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", nargs="?", type=Path, help="A fleet pack folder")
    parser.add_argument("--rul-cap", type=float, default=125.0, help="EMPS_ML_RUL_CAP")
    parser.add_argument("--trees", type=int, default=None, help="Default: the shipped count")
    parser.add_argument("--equipment", type=int, default=60, help="Without PACK: fleet size")
    parser.add_argument("--days", type=int, default=30, help="Without PACK: days of history")
    parser.add_argument("--interval", type=int, default=600, help="Without PACK: seconds")
    parser.add_argument("--seed", type=int, default=42, help="Without PACK: simulator seed")
    args = parser.parse_args()
    console = Console()
    began = time.perf_counter()
    env = {"EMPS_ML_RUL_CAP": str(args.rul_cap)}
    if args.trees:
        env["EMPS_ML_N_ESTIMATORS"] = str(args.trees)
    with (
        tempfile.TemporaryDirectory(prefix="emps-bench-pack-") as scratch,
        temporary_platform("fleet_quality", env) as platform,
    ):
        from emps import transform
        from emps.catalog import load_catalog
        from emps.fleet.importer import import_pack, installed_catalog
        from emps.ml.evaluate import RUN_TO_FAILURE, kfold_splits, life_unit, split_examples
        from emps.ml.train import retrain

        pack = args.pack or simulated_pack(args, Path(scratch) / "pack", console)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("import", total=None)

            def on_progress(step: str, done: int, total: int | None) -> None:
                progress.update(task, description=f"import: {step}", completed=done, total=total)

            t0 = time.perf_counter()
            # The pack brings its catalog: the platform reads it where the import installs it
            # (the temporary home's EMPS_CATALOG_PATH names the shipped one).
            target = installed_catalog(platform.settings)
            settings = platform.settings.model_copy(update={"catalog_path": target})
            report = import_pack(pack, settings, on_progress=on_progress)
            import_s = time.perf_counter() - t0
        for problem in report.problems[:20]:
            console.print(f"[yellow]refused[/]: {problem}")
        settings = report.settings
        catalog = load_catalog(settings.catalog_path)
        readings, copy_rows_s = raw_copy_rate(settings, console)
        console.print(f"imported {readings:,} readings in {import_s:.1f} s; building features")
        t0 = time.perf_counter()
        transform.build(full_refresh=True, settings=settings, catalog=catalog)
        build_s = time.perf_counter() - t0
        console.print(f"full build: {build_s:.1f} s; training")
        t0 = time.perf_counter()
        result, _ = retrain("bench", settings, on_step=lambda step: console.print(f"  {step}"))
        train_s = time.perf_counter() - t0
        metrics = result.metrics

        from emps.ml.dataset import read_failure_events, read_test_units, read_training_examples
        from emps.ml.evaluate import predict_rows, remaining_life_truth

        examples = read_training_examples(settings)
        failures = read_failure_events(settings)
        trees = settings.ml.n_estimators
        # Training scored the test units (emps.ml.evaluate.figures_on_test_units).
        test_rows = read_test_units(settings)
        if len(test_rows):
            cap = cap_per_row(test_rows, catalog, settings)
            truth = test_rows["remaining_life"].to_numpy(dtype=float)
            rul_rmse = metrics["test_units_rul_rmse"]
            rul_rmse_capped = metrics["test_units_rul_rmse_displayed"]
            baseline = baseline_rmse(settings, catalog, examples, test_rows, truth, cap, trees)
            judged_on = f"{len(test_rows)} test units"
        else:
            # Held-out units at every row: the same units the model was judged on.
            split = split_examples(examples, settings)
            if split.kind == RUN_TO_FAILURE:
                folds = kfold_splits(examples, settings.ml.cv_folds, settings)
            else:
                folds = [(split.train, split.report)]
            errors, floor = [], []
            for train, held in folds:
                rows = held.rows
                life, censored = remaining_life_truth(rows, catalog)
                keep = ~censored
                rows, life = rows[keep], life[keep]
                cap = cap_per_row(rows, catalog, settings)
                estimate = predict_rows(result.model, rows).remaining_life
                errors.append(np.minimum(estimate, cap) - np.minimum(life, cap))
                base = baseline_rmse(settings, catalog, train, rows, life, cap, trees)
                floor.append((base**2) * len(rows))
            counted = sum(len(e) for e in errors)
            rul_rmse = metrics.get("rul_rmse", float("nan"))
            rul_rmse_capped = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
            baseline = float(np.sqrt(sum(floor) / counted)) if counted else float("nan")
            judged_on = f"{counted} held-out rows with a known failure"
        console.print(
            f"remaining life on {judged_on}: RMSE (capped at {args.rul_cap:g}) "
            f"{rul_rmse_capped:.2f} against the raw-window-mean forest's {baseline:.2f}"
        )
        heldout_failures = int(metrics.get("failures_evaluated", 0))

        def figure(key: str, digits: int = 4):
            value = metrics.get(key)
            return None if value is None or not np.isfinite(value) else round(float(value), digits)

        line = {
            "bench": "fleet_quality",
            "pack": str(args.pack) if args.pack else "simulated",
            "equipment": int(examples["equipment_id"].nunique()) + len(test_rows),
            "readings": readings,
            "failures": len(failures),
            "failures_heldout": heldout_failures,
            "test_units": len(test_rows),
            "life_unit": life_unit(catalog),
            "rul_cap": args.rul_cap,
            "rul_rmse": round(float(rul_rmse), 3),
            "rul_rmse_capped": round(rul_rmse_capped, 3),
            "baseline_rul_rmse_capped": round(baseline, 3),
            "rul_rmse_capped_vs_baseline": round(rul_rmse_capped / baseline, 3)
            if baseline
            else None,
            "import_s": round(import_s, 1),
            "build_s": round(build_s, 1),
            "train_s": round(train_s, 1),
            "total_s": round(import_s + build_s + train_s, 1),
            "import_rows_s": round(readings / import_s) if import_s else None,
            "copy_rows_s": round(copy_rows_s),
            "import_vs_copy": round(readings / import_s / copy_rows_s, 3) if import_s else None,
            "trees": trees,
            "failures_warned_share_ci95": [
                figure("failures_warned_share_ci95_low"),
                figure("failures_warned_share_ci95_high"),
            ],
            **{key: figure(key) for key in EVALUATION_KEYS},
            "runtime_s": round(time.perf_counter() - began, 1),
        }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
