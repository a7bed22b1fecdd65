"""Domain rules every part of the platform shares: severity bands and health scores."""

from __future__ import annotations

from enum import StrEnum

from emps.settings import Settings, get_settings


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


def severity_for(failure_probability: float, settings: Settings | None = None) -> Severity:
    """LOW < medium ≤ MEDIUM < high ≤ HIGH < critical ≤ CRITICAL (thresholds from settings)."""
    if not 0.0 <= failure_probability <= 1.0:
        raise ValueError(f"failure probability must be within [0, 1], got {failure_probability}")
    settings = settings or get_settings()
    if failure_probability >= settings.severity_critical:
        return Severity.CRITICAL
    if failure_probability >= settings.severity_high:
        return Severity.HIGH
    if failure_probability >= settings.severity_medium:
        return Severity.MEDIUM
    return Severity.LOW


def health_score_for(failure_probability: float) -> int:
    """0 (about to fail) to 100 (healthy): round(100 × (1 − p))."""
    return round(100 * (1.0 - failure_probability))
