"""What an alert notification says: email subject, plain text and HTML bodies, and the SMS text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

from emps.domain import assessment_words, remaining_life_words
from emps.settings import Settings, get_settings

EVENT_TITLES = {
    "alert.opened": "New alert",
    "alert.escalated": "Alert severity raised",
    "alert.unacknowledged": "Alert still unacknowledged",
}


@dataclass(frozen=True)
class AlertNotice:
    """Everything a notification shows about an alert."""

    alert_id: int
    equipment_id: str
    equipment_type: str
    site: str
    severity: str
    failure_probability: float
    days_until_failure: float | None
    message: str
    event: str = "alert.opened"
    escalation_level: int = 0
    top_sensors: list[dict] = field(default_factory=list)
    task: str | None = None
    # Remaining life in the type's life unit (days, cycles...); beyond: "more than" that.
    remaining_life: float | None = None
    life_unit: str | None = None
    remaining_life_beyond: bool | None = None
    # Whether the prediction can be trusted (ok, insufficient_data, out_of_distribution).
    assessment: str | None = None
    assessment_reason: str | None = None

    @property
    def life_words(self) -> str:
        """'about 4.2 days', 'more than 125 cycles', or 'unknown'."""
        if self.remaining_life is None and self.days_until_failure is not None:
            return remaining_life_words(self.days_until_failure, "day", False)
        words = remaining_life_words(
            self.remaining_life, self.life_unit, self.remaining_life_beyond
        )
        return words or "unknown"


def equipment_link(equipment_id: str, settings: Settings | None = None) -> str:
    """The dashboard page of an equipment (the Streamlit page reads ?equipment=)."""
    settings = settings or get_settings()
    base = settings.dashboard.base_url.rstrip("/")
    return f"{base}/equipment?equipment={quote(equipment_id, safe='')}"


def _sensor_lines(notice: AlertNotice) -> list[str]:
    lines = []
    for item in notice.top_sensors[:3]:
        label = item.get("label") or item.get("feature") or "?"
        contribution = item.get("contribution")
        value = item.get("value")
        text = str(label)
        if value is not None:
            text += f" = {value:.3g}" if isinstance(value, int | float) else f" = {value}"
        if contribution is not None:
            text += f" (contribution {contribution:+.2f})"
        lines.append(text)
    return lines


def render_email(notice: AlertNotice, settings: Settings | None = None) -> tuple[str, str, str]:
    """(subject, text body, HTML body); every value from data is escaped in the HTML body."""
    settings = settings or get_settings()
    title = EVENT_TITLES.get(notice.event, "Alert")
    if notice.event == "alert.unacknowledged":
        title += f" (escalation level {notice.escalation_level})"
    subject = (
        f"[EMPS {notice.severity}] {notice.equipment_id} at {notice.site}: "
        f"{notice.failure_probability:.0%} failure risk"
    )
    link = equipment_link(notice.equipment_id, settings)
    sensors = _sensor_lines(notice)
    facts = [
        ("Equipment", f"{notice.equipment_id} ({notice.equipment_type}, site {notice.site})"),
        ("Severity", notice.severity),
        ("Failure probability", f"{notice.failure_probability:.0%}"),
        ("Remaining life", notice.life_words),
        ("Alert", f"#{notice.alert_id}: {notice.message}"),
    ]
    caveat = assessment_words(notice.assessment, notice.assessment_reason)
    if caveat:
        facts.insert(3, ("Assessment", caveat))
    if notice.task:
        facts.append(("Maintenance task", notice.task))
    text = "\n".join(
        [f"{title}", ""]
        + [f"{k}: {v}" for k, v in facts]
        + (["", "Top contributing sensors:"] + [f"  - {s}" for s in sensors] if sensors else [])
        + ["", f"Open in the dashboard: {link}", ""]
    )
    rows = "".join(
        f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts
    )
    sensor_html = (
        "<p>Top contributing sensors:</p><ul>"
        + "".join(f"<li>{escape(s)}</li>" for s in sensors)
        + "</ul>"
        if sensors
        else ""
    )
    html = (
        "<!doctype html><html><body>"
        f"<h2>{escape(title)}</h2><table>{rows}</table>{sensor_html}"
        f'<p><a href="{escape(link, quote=True)}">Open {escape(notice.equipment_id)} '
        "in the dashboard</a></p></body></html>"
    )
    return subject, text, html


def render_sms(notice: AlertNotice, settings: Settings | None = None) -> str:
    """A short text (one SMS segment when possible)."""
    life = notice.life_words
    life = "" if life == "unknown" else f", life {life}"
    caveat = assessment_words(notice.assessment)
    caveat = f" ({caveat})" if caveat else ""
    return (
        f"EMPS {notice.severity} {notice.equipment_id}@{notice.site}: "
        f"{notice.failure_probability:.0%} fail risk{life}{caveat}. Alert #{notice.alert_id}"
    )[:300]
