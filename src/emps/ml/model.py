"""The failure model as one object: forest classifier, calibration, remaining-life table, feature
list and the training profile predictions are assessed against. One MLflow model version is one
of these, so the scorer always uses the parts that were evaluated together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from emps.ml.forest import packed

if TYPE_CHECKING:
    from emps.ml.assess import TrainingProfile

# scikit-learn's per-tree calls cost ~1 ms per tree whatever the batch; the packed walk is
# faster for small batches (a single prediction: ~10 ms instead of ~500 ms), slower for big ones.
PACKED_MAX_ROWS = 1000


class FailureModel(BaseEstimator):
    """Predicts P(failure within the horizon) and the remaining life from dbt feature rows.

    The probability comes from the forest's vote through the calibration table. The remaining
    life comes from the same vote where the vote sees a failure coming (the life table: the
    median remaining life of training rows with that out-of-fold vote, in failure horizons,
    never rising with the vote), so within the horizon a higher probability never reads as a
    longer life. Where the table reads a horizon or more (the vote sees nothing coming), the
    life forest, a regressor of the remaining life on the same features, tells how much wear
    is left, never under one horizon: a machine read as failing within the horizon never has a
    lower probability than one read beyond it. Two scores of the same features read the same.
    Remaining life is told in each type's life unit (days for wall-time clocks, the counter's
    unit otherwise), up to the type's cap: beyond it the history gives no support and the
    estimate reads "more than" the cap.
    """

    # Versions registered before these existed load without them: the class holds their default.
    life_x: np.ndarray | None = None
    life_y: np.ndarray | None = None
    clocks: dict[str, dict[str, Any]] | None = None
    assessment_profile: TrainingProfile | None = None
    life_forest: Any = None

    def __init__(
        self,
        classifier: Any = None,
        regressor: Any = None,
        feature_names: list[str] | None = None,
        feature_labels: dict[str, list[str | None]] | None = None,
        calibration_x: np.ndarray | None = None,
        calibration_y: np.ndarray | None = None,
        threshold: float = 0.5,
        horizon_days: float = 7,
        regressor_max_days: float = 30.0,
        calibration_method: str = "isotonic",
        life_x: np.ndarray | None = None,
        life_y: np.ndarray | None = None,
        clocks: dict[str, dict[str, Any]] | None = None,
        assessment_profile: TrainingProfile | None = None,
        life_forest: Any = None,
    ):
        self.classifier = classifier
        # Models trained before the life table kept a days regressor: still read for them.
        self.regressor = regressor
        self.feature_names = feature_names
        self.feature_labels = feature_labels
        self.calibration_x = calibration_x
        self.calibration_y = calibration_y
        self.threshold = threshold
        self.horizon_days = horizon_days
        self.regressor_max_days = regressor_max_days
        self.calibration_method = calibration_method
        self.life_x = life_x  # forest votes, rising ...
        self.life_y = life_y  # ... and the remaining life they map to, in horizons
        # Per equipment type: unit, unit_seconds, horizon (life units), cap and naive (life units).
        self.clocks = clocks
        self.assessment_profile = assessment_profile
        # Remaining life as a share of the type's cap, from the features (beyond the horizon).
        self.life_forest = life_forest

    @property
    def trained_features(self) -> list[str]:
        """The feature names in training order: every trained model has them."""
        if self.feature_names is None:
            raise ValueError("the model has no feature list: it was never trained")
        return self.feature_names

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The feature matrix in training order; a feature the frame lacks is an error, not a zero."""
        missing = [c for c in self.feature_names or [] if c not in frame.columns]
        if missing:
            raise ValueError(
                f"feature rows lack {len(missing)} column(s) the model was trained on "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
                "rebuild the dbt features or retrain the model"
            )
        return frame[self.feature_names].to_numpy(dtype=np.float64, na_value=np.nan)

    def vector(self, row: Mapping[str, Any]) -> np.ndarray:
        """A 1 x features matrix from one feature row as a mapping (None = missing)."""
        missing = [c for c in self.feature_names or [] if c not in row]
        if missing:
            raise ValueError(
                f"the feature row lacks {len(missing)} column(s) the model was trained on "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
                "rebuild the dbt features or retrain the model"
            )
        values = [row[c] for c in self.feature_names or []]
        return np.array([[np.nan if v is None else float(v) for v in values]], dtype=np.float64)

    def forest_score(self, X: np.ndarray) -> np.ndarray:
        """The uncalibrated forest vote for failure (what explanations decompose)."""
        if len(X) > PACKED_MAX_ROWS:
            return self.classifier.predict_proba(X)[:, 1]
        return packed(self.classifier).walk(X)[0]

    def calibrate(self, score: np.ndarray) -> np.ndarray:
        """Map forest votes to probabilities that mean what they say (the calibration table
        fitted on out-of-fold votes, interpolated)."""
        if self.calibration_x is None or self.calibration_y is None or len(self.calibration_x) == 0:
            return np.clip(score, 0.0, 1.0)
        return np.clip(np.interp(score, self.calibration_x, self.calibration_y), 0.0, 1.0)

    def failure_probability(self, X: np.ndarray) -> np.ndarray:
        return self.calibrate(self.forest_score(X))

    def clock(self, equipment_type: str | None) -> dict[str, Any]:
        """The life unit, its seconds, the horizon, cap and naive estimate (life units) of a type."""
        clocks = self.clocks or {}
        if equipment_type in clocks:
            return clocks[equipment_type]
        if clocks:  # a type added since training: the first type's clock, in its own unit
            return next(iter(clocks.values()))
        days = float(self.horizon_days)
        return {
            "unit": "day",
            "unit_seconds": 86400.0,
            "horizon": days,
            "cap": float(self.regressor_max_days),
            "naive": float(self.regressor_max_days),
        }

    def per_type(self, types: Any, key: str, count: int) -> np.ndarray:
        """A clock value (unit_seconds, horizon, cap, naive) for each of `count` rows of `types`."""
        types = np.broadcast_to(np.asarray(types, dtype=object), (count,))
        values = {t: float(self.clock(t)[key]) for t in pd.unique(types)}
        return np.array([values[t] for t in types], dtype=float)

    def remaining_life(
        self, score: np.ndarray, types: Any = None, X: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(remaining life in each row's life unit, True where it is the cap: "more than") from
        the forest votes of rows of equipment `types` (one type name or one per row)."""
        score = np.asarray(score, dtype=float)
        cap = self.per_type(types, "cap", len(score))
        if self.life_x is None or self.life_y is None or len(self.life_x) == 0:
            return self._regressor_days(X, score, cap)
        horizons = np.interp(score, self.life_x, self.life_y)
        horizon = self.per_type(types, "horizon", len(score))
        life = horizons * horizon
        beyond = horizons >= 1.0  # the vote sees no failure within the horizon
        if self.life_forest is not None and X is not None and beyond.any():
            wear = self._walk(self.life_forest, np.asarray(X)[beyond]) * cap[beyond]
            life[beyond] = np.maximum(wear, horizon[beyond])
        return np.minimum(life, cap), life >= cap - 1e-9

    @staticmethod
    def _walk(forest: Any, X: np.ndarray) -> np.ndarray:
        if len(X) > PACKED_MAX_ROWS:
            return forest.predict(X)
        return packed(forest).walk(X)[0]

    def _regressor_days(
        self, X: np.ndarray | None, score: np.ndarray, cap: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Days from the regressor of a model trained before the life table."""
        if self.regressor is None or X is None:
            return np.full(len(score), np.nan), np.zeros(len(score), dtype=bool)
        if len(X) > PACKED_MAX_ROWS:
            days = self.regressor.predict(X)
        else:
            days = packed(self.regressor).walk(X)[0]
        days = np.clip(days, 0.0, cap)
        return days, days >= cap - 1e-9

    def days_until_failure(
        self, score: np.ndarray, types: Any = None, X: np.ndarray | None = None
    ) -> np.ndarray:
        """The remaining life in days of (derived) time."""
        life, _ = self.remaining_life(score, types, X)
        return life * self.per_type(types, "unit_seconds", len(life)) / 86400.0

    def predict(self, X: Any) -> np.ndarray:
        """MLflow pyfunc entry point: the calibrated failure probability of each row."""
        if isinstance(X, pd.DataFrame):
            X = self.matrix(X)
        return self.failure_probability(np.asarray(X, dtype=np.float64))
