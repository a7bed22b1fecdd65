"""Scoring throughput and single-prediction latency, on a fresh temporary database and MLflow store.

    uv run python bench/score.py [--equipment 10000] [--trees 200] [--single 200]

"ours" is the scoring path of emps/flows/score.py without Prefect around it: read the champion
alias, read each equipment's latest feature row, predict probability + days, explain every row,
insert ops.predictions. "bare" is `predict_proba` of the same forest on the same feature matrix.
"single" is `emps predict` for one equipment in a warm process (champion alias, re-read at most
every EMPS_ML_ALIAS_MAX_AGE_S; feature row read; predict; explain). Both runs are broken down
step by step, so the ratio and the latency say where their time goes. The feature rows are synthetic, with the dbt contract's columns, in
analytics.fct_equipment_features (no dbt run here). Last line: {"bench": "score", ...}.
"""

from __future__ import annotations

import argparse
import json
import time

from _champion import champion_and_features
from _tempdb import temporary_platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equipment", type=int, default=10_000)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--single", type=int, default=200)
    args = parser.parse_args()

    with temporary_platform("score", {"EMPS_ML_N_ESTIMATORS": str(args.trees)}) as platform:
        run(args, platform.settings)


def run(args: argparse.Namespace, settings) -> None:
    import numpy as np

    from emps.ml import predict, registry
    from emps.ml.dataset import read_latest_feature_row, read_latest_features

    _, rows = champion_and_features(settings, args.equipment, equipment=60, days=120)

    predict.load_champion(settings)  # warm: the model is loaded once per process anyway
    started = time.perf_counter()
    report = predict.score_equipment(settings, emit_events=False)
    ours = time.perf_counter() - started
    assert report.scored == args.equipment, report

    # Where the time goes: the same steps one by one.
    parts = {}
    t = time.perf_counter()
    champion = predict.load_champion(settings)
    parts["alias_lookup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    frame = read_latest_features(settings, only_unscored=False)
    parts["read_features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    X = champion.model.matrix(frame)
    parts["to_matrix_s"] = time.perf_counter() - t
    t = time.perf_counter()
    types = frame["equipment_type"].tolist() if "equipment_type" in frame else None
    champion.model.days_until_failure(champion.model.forest_score(X), types, X)
    parts["remaining_life_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scored = predict.score_frame(champion.model, champion.version, frame, settings)
    # Probability and explanation come from one walk of the forest, remaining life from the
    # life table and, beyond the horizon, the life forest.
    parts["predict_explain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    predict.write_predictions(scored, settings)
    parts["write_s"] = time.perf_counter() - t

    t = time.perf_counter()
    champion.model.classifier.predict_proba(X)
    bare = time.perf_counter() - t

    latencies = []
    ids = rows["equipment_id"].to_numpy()
    for i in range(args.single):
        t = time.perf_counter()
        predict.predict_equipment(str(ids[i % len(ids)]), settings=settings)
        latencies.append((time.perf_counter() - t) * 1000)
    p50, p95 = np.percentile(latencies[10:] or latencies, [50, 95])

    # Where a single prediction's time goes, step by step (ms).
    single = {"alias_lookup": [], "read_row": [], "predict_explain": []}
    for i in range(min(args.single, 100)):
        t = time.perf_counter()
        registry.alias_version(registry.CHAMPION, settings)
        single["alias_lookup"].append(time.perf_counter() - t)
        t = time.perf_counter()
        row = read_latest_feature_row(str(ids[i % len(ids)]), settings)
        single["read_row"].append(time.perf_counter() - t)
        t = time.perf_counter()
        predict._predict_matrix(
            champion.model, champion.model.vector(row), [row.get("equipment_type")], settings
        )
        single["predict_explain"].append(time.perf_counter() - t)
    print("where the time of one scoring run goes (s):")
    for key, value in parts.items():
        print(f"  {key:18s} {value:8.3f}")
    print(
        "where a single prediction's time goes (p50 ms; the alias is read at most every "
        f"{settings.ml.alias_max_age_s:g} s by emps predict):"
    )
    for key, value in single.items():
        print(f"  {key:18s} {np.percentile(value, 50) * 1000:8.2f}")
    print(
        json.dumps(
            {
                "bench": "score",
                "equipment": args.equipment,
                "trees": args.trees,
                "ours_s": round(ours, 3),
                "bare_predict_s": round(bare, 3),
                "ratio": round(ours / bare, 2),
                "single_p50_ms": round(float(p50), 2),
                "single_p95_ms": round(float(p95), 2),
                **{k: round(v, 3) for k, v in parts.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
