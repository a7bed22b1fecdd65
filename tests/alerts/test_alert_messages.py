"""What a crew reads in an alert: remaining life in the equipment's own unit, and whether the
prediction behind the alert can be trusted."""

from __future__ import annotations

from emps.alerting.messages import AlertNotice, render_email, render_sms


def notice(**changes) -> AlertNotice:
    fields = {
        "alert_id": 7,
        "equipment_id": "ENG-012",
        "equipment_type": "turbofan",
        "site": "unknown",
        "severity": "HIGH",
        "failure_probability": 0.72,
        "days_until_failure": 3.5,
        "message": "HIGH failure risk 72%",
        "remaining_life": 42.0,
        "life_unit": "cycle",
        "remaining_life_beyond": False,
        "assessment": "ok",
        "assessment_reason": None,
    }
    return AlertNotice(**(fields | changes))


def test_remaining_life_reads_in_the_type_unit_and_beyond_the_cap_as_more_than(settings):
    """An engine's alert tells its remaining life in cycles; at the cap it reads 'more than'."""
    _, text, html = render_email(notice(), settings)
    assert "Remaining life: about 42 cycles" in text and "about 42 cycles" in html
    _, text, _ = render_email(
        notice(remaining_life=21.0, life_unit="day", remaining_life_beyond=True), settings
    )
    assert "Remaining life: more than 21 days" in text
    assert "life about 42 cycles" in render_sms(notice(), settings)


def test_an_alert_on_an_untrustworthy_prediction_says_so(settings):
    """A prediction resting on a stuck sensor carries its assessment into the mail and the SMS;
    an ok one adds no line."""
    stuck = notice(
        assessment="insufficient_data",
        assessment_reason="vibration stuck: no change over the last 1 h",
    )
    _, text, html = render_email(stuck, settings)
    assert "Assessment: insufficient data: vibration stuck: no change over the last 1 h" in text
    assert "insufficient data" in html
    assert "(insufficient data)" in render_sms(stuck, settings)
    _, text, _ = render_email(notice(), settings)
    assert "Assessment" not in text
