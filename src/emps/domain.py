"""Domain rules every part of the platform shares: severity bands, health scores, and how
remaining life and a prediction's assessment read."""

from __future__ import annotations

from enum import StrEnum

from emps.settings import ThresholdSettings, get_settings


class Severity(StrEnum):
    """The severity bands, least severe first: the one place Python spells out their order (the
    dbt project's is the `severities` macro)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @property
    def color(self) -> str:
        """Its colour in charts and reports: green to red."""
        return SEVERITY_COLORS[self]

    @property
    def threshold_key(self) -> str:
        """The ops.thresholds key (and setting) of the probability the band starts at."""
        return f"severity_{self.value.lower()}"

    @classmethod
    def banded(cls) -> tuple[Severity, ...]:
        """The bands a probability threshold starts (all but LOW), least severe first."""
        return tuple(s for s in cls if s is not cls.LOW)


SEVERITY_COLORS = {
    Severity.LOW: "#4c9a2a",
    Severity.MEDIUM: "#e0b000",
    Severity.HIGH: "#f07818",
    Severity.CRITICAL: "#c81e1e",
}
# Equipment without a current prediction (never scored, or silent): a filter value and a colour
# beside the bands, never a band.
UNSCORED = "UNSCORED"
UNSCORED_COLOR = "#9e9e9e"


def severity_for(
    failure_probability: float, thresholds: ThresholdSettings | None = None
) -> Severity:
    """LOW < medium ≤ MEDIUM < high ≤ HIGH < critical ≤ CRITICAL (the bands of `thresholds`)."""
    if not 0.0 <= failure_probability <= 1.0:
        raise ValueError(f"failure probability must be within [0, 1], got {failure_probability}")
    thresholds = thresholds or get_settings().thresholds
    if failure_probability >= thresholds.severity_critical:
        return Severity.CRITICAL
    if failure_probability >= thresholds.severity_high:
        return Severity.HIGH
    if failure_probability >= thresholds.severity_medium:
        return Severity.MEDIUM
    return Severity.LOW


def health_score_for(failure_probability: float) -> int:
    """0 (about to fail) to 100 (healthy): round(100 × (1 − p))."""
    return round(100 * (1.0 - failure_probability))


# A prediction made less than the longest feature window after a service or repair: no alert
# opens or rises on it (emps.ml.assess sets the assessments).
SETTLING = "settling"
# What each prediction assessment means to a crew.
ASSESSMENT_TITLES = {
    "ok": "ok",
    SETTLING: "settling after service",
    "insufficient_data": "insufficient data",
    "out_of_distribution": "outside the training data",
}


def assessment_words(state: str | None, reason: str | None = None) -> str:
    """'insufficient data: vibration stuck: no change over the last 1 h'; '' for ok or unknown
    (a prediction made before assessments existed)."""
    if not isinstance(state, str) or state in ("", "ok"):  # None or a table's NaN: unknown
        return ""
    title = ASSESSMENT_TITLES.get(state, state.replace("_", " "))
    return f"{title}: {reason}" if isinstance(reason, str) and reason else title


def remaining_life_words(value: float | None, unit: str | None, beyond: bool | None) -> str:
    """'about 4.2 days', 'more than 21 days', 'about 37 cycles'; '' when there is no estimate."""
    if value is None or value != value:  # None or NaN
        return ""
    unit = unit if isinstance(unit, str) and unit else "day"
    beyond = beyond is True or (beyond == beyond and bool(beyond))  # NaN: unknown, not beyond
    shown = f"{value:.1f}" if value < 10 else f"{value:.0f}"
    plural = "" if shown in ("1", "1.0") else "s"
    return f"{'more than' if beyond else 'about'} {shown} {unit}{plural}"
