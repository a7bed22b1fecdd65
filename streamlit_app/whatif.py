"""The "what if" panel: a manual prediction for readings the user types in."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pandas as pd
import streamlit as st

from emps.catalog import load_catalog


def manual_predictor() -> Callable | None:
    """ml.predict's manual prediction function, when the ML package provides one."""
    try:
        module = importlib.import_module("ml.predict")
    except ImportError:
        return None
    return getattr(module, "predict_manual", None)


def render_what_if(equipment_id: str, trend: pd.DataFrame) -> None:
    st.subheader("What if")
    predictor = manual_predictor()
    catalog = load_catalog()
    latest = trend.dropna(how="all").iloc[-1] if not trend.empty else None
    with st.form("what_if"):
        cols = st.columns(len(catalog.sensor_names))
        readings = {}
        for col, name in zip(cols, catalog.sensor_names, strict=True):
            sensor = catalog.sensor(name)
            default = latest[name] if latest is not None and pd.notna(latest[name]) else None
            readings[name] = col.number_input(
                f"{name} ({sensor.unit})",
                min_value=float(sensor.valid_range[0]),
                max_value=float(sensor.valid_range[1]),
                value=None if default is None else float(default),
                key=f"whatif_{name}",
            )
        submitted = st.form_submit_button("Predict", disabled=predictor is None)
    if predictor is None:
        st.info(
            "Manual prediction is not available: no champion-model prediction function "
            "(ml.predict.predict_manual) is installed yet."
        )
        return
    if submitted:
        try:
            result = predictor(equipment_id, {k: v for k, v in readings.items() if v is not None})
        except Exception as exc:  # the model may be missing or refuse the input: say so
            st.error(f"Prediction failed: {exc}")
            return
        st.json(result if isinstance(result, dict) else getattr(result, "__dict__", str(result)))
