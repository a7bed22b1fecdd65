"""The "what if" panel: a prediction for this equipment with readings the user types in."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from emps.catalog import load_catalog
from emps.dashboard.ui import plain
from emps.domain import assessment_words, remaining_life_words


def render_what_if(equipment_id: str) -> None:
    st.subheader("What if")
    st.caption(
        "Predicts from this equipment's latest features with the readings you enter in place of "
        "the latest ones (nothing is stored). Leave a field blank to keep the latest reading."
    )
    catalog = load_catalog()
    with st.form("what_if"):
        cols: Sequence[DeltaGenerator] = st.columns(len(catalog.sensor_names))
        readings = {}
        for col, name in zip(cols, catalog.sensor_names, strict=True):
            sensor = catalog.sensor(name)
            readings[name] = col.number_input(
                f"{name} ({sensor.unit})",
                min_value=float(sensor.valid_range[0]),
                max_value=float(sensor.valid_range[1]),
                value=None,
                key=f"whatif_{name}",
            )
        submitted = st.form_submit_button("Predict")
    if submitted:
        # The model's code (scikit-learn, ~70 MB) loads at the first prediction asked for, not
        # with every equipment page.
        from emps.ml.predict import predict_equipment

        overrides = {k: v for k, v in readings.items() if v is not None}
        try:
            with st.spinner("Scoring with the champion model…"):
                result = predict_equipment(equipment_id, overrides)
        except Exception as exc:  # no champion yet, no features yet, unknown feature: say so
            st.error(f"Prediction failed: {plain(exc)}")
            return
        cols = st.columns(4)
        cols[0].metric("Failure probability", f"{result['failure_probability']:.0%}")
        cols[1].metric("Severity", result["severity"])
        cols[2].metric("Health score", result["health_score"])
        life = remaining_life_words(
            result.get("remaining_life"),
            result.get("life_unit"),
            result.get("remaining_life_beyond"),
        )
        if not life and result.get("days_until_failure") is not None:
            life = remaining_life_words(result["days_until_failure"], "day", False)
        cols[3].metric("Remaining life", life or "–")
        caveat = assessment_words(result.get("assessment"), result.get("assessment_reason"))
        if caveat:
            st.warning(f"Assessment: {plain(caveat)}")
        st.caption(f"Model version {plain(result.get('model_version'))}")
