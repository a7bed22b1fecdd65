"""Severity bands and health scores as DESIGN.md defines them."""

import pytest

from emps.domain import Severity, health_score_for, severity_for


@pytest.mark.parametrize(
    ("probability", "expected"),
    [
        (0.0, Severity.LOW),
        (0.2999, Severity.LOW),
        (0.30, Severity.MEDIUM),
        (0.5999, Severity.MEDIUM),
        (0.60, Severity.HIGH),
        (0.8499, Severity.HIGH),
        (0.85, Severity.CRITICAL),
        (1.0, Severity.CRITICAL),
    ],
)
def test_severity_bands_follow_the_thresholds(settings, probability, expected):
    """Each threshold belongs to the band above it."""
    assert severity_for(probability, settings.thresholds) is expected


def test_probability_outside_unit_interval_is_refused(settings):
    """A probability of 1.2 is a bug upstream, not a CRITICAL alert."""
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        severity_for(1.2, settings.thresholds)


def test_health_score_is_the_complement_of_probability():
    """A 0.87 failure probability reads as health 13."""
    assert health_score_for(0.87) == 13
    assert health_score_for(0.0) == 100
