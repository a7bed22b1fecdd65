"""A champion trained on synthetic examples (emps.ml.synthetic), and one feature row per bench
equipment, on a bench's temporary platform: the rows have the dbt contract's columns, in
EMPS_ML_FEATURES_RELATION (no dbt run)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from emps.settings import Settings


def champion_and_features(
    settings: Settings, bench_equipment: int, **training: Any
) -> tuple[str, pd.DataFrame]:
    """(the champion's version, the bench equipment's feature rows): a model trained on
    synthetic examples (`training`: their size) and promoted by the gate, then
    `bench_equipment` feature rows, ids BEN-00000 on, each drawn from the examples and stamped
    now."""
    import numpy as np
    import pandas as pd

    from emps.catalog import load_catalog
    from emps.ml import registry, synthetic
    from emps.ml.train import train_and_register

    catalog = load_catalog(settings.catalog_path)
    print("training a champion on synthetic examples ...", flush=True)
    examples, failures = synthetic.training_examples(catalog, **training)
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "bench", settings, examples, failures)
    rng = np.random.default_rng(1)
    rows = examples.iloc[rng.integers(0, len(examples), bench_equipment)].copy()
    rows["equipment_id"] = [f"BEN-{i:05d}" for i in range(bench_equipment)]
    rows["ts"] = pd.Timestamp.now(tz="UTC").floor("min")
    features = rows.drop(columns=["next_failure_at", "days_until_failure", "fails_within_horizon"])
    print(f"loading {bench_equipment:,} feature rows ...", flush=True)
    synthetic.load_examples(features, settings, settings.ml.features_relation)
    return version, features
