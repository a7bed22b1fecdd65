"""Fleet, site and equipment reports for a date range, as PDF (charts + tables) and CSV.

The dashboard's Reports page and the daily maintenance email both call `build_report`:

    report = build_report("site:North", start, end)
    report.pdf_bytes(); report.csv_bytes(); report.filename("pdf")

Reads go through emps.queries (read-only role).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from emps import queries
from emps.domain import UNSCORED, UNSCORED_COLOR, Severity
from emps.settings import Settings, get_settings

ScopeKind = Literal["fleet", "site", "equipment"]
# Least severe first, then equipment with no current prediction.
SEVERITY_COLORS = {**{s.value: s.color for s in Severity}, UNSCORED: UNSCORED_COLOR}
# A cell starting with one of these is a formula to a spreadsheet (OWASP's "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet will not run: one starting like a formula gets a leading `'`
    (shown as text, the rest kept). Site names, equipment ids and messages come from devices,
    fleet packs and users; numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


CSV_COLUMNS = [
    "equipment_id",
    "equipment_type",
    "site",
    "health_score",
    "severity",
    "failure_probability",
    "days_until_failure",
    "last_reading_at",
    "alerts_in_period",
    "open_alert_severity",
    "tasks_in_period",
    "next_task_type",
    "next_task_date",
    "model_version",
]


class ReportError(ValueError):
    """The report cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class ReportScope:
    kind: ScopeKind = "fleet"
    target: str | None = None

    @classmethod
    def parse(cls, value: str | ReportScope) -> ReportScope:
        """`fleet`, `site:<site>` or `equipment:<equipment id>`."""
        if isinstance(value, ReportScope):
            return value
        kind, _, target = value.partition(":")
        kind = kind.strip().lower()
        if kind == "fleet" and not target:
            return cls("fleet")
        if kind in ("site", "equipment") and target.strip():
            return cls(kind, target.strip())  # type: ignore[arg-type]
        raise ReportError(
            f"report scope {value!r} must be 'fleet', 'site:<site>' or 'equipment:<equipment id>'"
        )

    @property
    def title(self) -> str:
        return {"fleet": "Fleet", "site": "Site", "equipment": "Equipment"}[self.kind] + (
            f" {self.target}" if self.target else ""
        )

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.title.lower()).strip("-")


@dataclass
class Report:
    scope: ReportScope
    start: datetime
    end: datetime
    generated_at: datetime
    equipment: pd.DataFrame
    alerts: pd.DataFrame
    tasks: pd.DataFrame
    failures: pd.DataFrame
    prediction_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The severity bands in force when the report was built (ops.thresholds).
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"EMPS {self.scope.title} report"

    @property
    def period(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"

    def filename(self, extension: str) -> str:
        return f"emps-{self.scope.slug}-{self.start:%Y%m%d}-{self.end:%Y%m%d}.{extension}"

    def summary(self) -> dict[str, float | int]:
        severities = self.equipment["severity"].fillna(UNSCORED).value_counts()
        acked = self.alerts["acknowledged_at"].notna()
        return {
            "equipment": len(self.equipment),
            **{f"{s.lower()}_equipment": int(severities.get(s, 0)) for s in SEVERITY_COLORS},
            "alerts_raised": len(self.alerts),
            "alerts_open": int((self.alerts["status"] == "open").sum()),
            "mean_minutes_to_acknowledge": round(
                float(self.alerts.loc[acked, "minutes_to_acknowledge"].astype(float).mean()), 1
            )
            if acked.any()
            else float("nan"),
            "tasks_completed": int((self.tasks["status"] == "completed").sum()),
            "tasks_open": int(self.tasks["status"].isin(["scheduled", "in_progress"]).sum()),
            "failures": len(self.failures),
            "failures_caught": int(self.failures["caught"].sum()) if len(self.failures) else 0,
        }

    def csv_bytes(self) -> bytes:
        """One row per equipment in scope: health now, activity in the period."""
        rows = self.equipment[CSV_COLUMNS].copy()
        for column in rows.select_dtypes(include=["object", "string"]).columns:
            rows[column] = rows[column].map(spreadsheet_safe)
        return rows.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ").encode()

    def pdf_bytes(self) -> bytes:
        return _render_pdf(self)


def build_report(
    scope: str | ReportScope,
    start: datetime,
    end: datetime,
    settings: Settings | None = None,
) -> Report:
    """Gather everything a report shows for `scope` over [start, end)."""
    settings = settings or get_settings()
    scope = ReportScope.parse(scope)
    if start.tzinfo is None or end.tzinfo is None:
        raise ReportError("report start and end need a time zone")
    if start >= end:
        raise ReportError(f"report start {start:%Y-%m-%d} must be before its end {end:%Y-%m-%d}")
    sites = [scope.target] if scope.kind == "site" and scope.target is not None else None
    equipment = queries.fleet_health(sites=sites, settings=settings)
    if scope.kind == "equipment":
        equipment = equipment[equipment["equipment_id"] == scope.target]
        if equipment.empty:
            raise ReportError(f"equipment {scope.target} is not registered")
    elif scope.kind == "site" and equipment.empty:
        raise ReportError(f"site {scope.target} has no registered equipment")
    in_scope = set(equipment["equipment_id"])

    alerts = queries.alerts(since=start, until=end, sites=sites, limit=100_000, settings=settings)
    alerts = alerts[alerts["equipment_id"].isin(in_scope)].reset_index(drop=True)
    tasks = queries.tasks(start, end, sites=sites, settings=settings)
    tasks = tasks[tasks["equipment_id"].isin(in_scope)].reset_index(drop=True)
    failures = queries.failures_caught(start, end, settings=settings)
    failures = failures[failures["equipment_id"].isin(in_scope)].reset_index(drop=True)

    equipment = equipment.assign(
        alerts_in_period=equipment["equipment_id"].map(alerts["equipment_id"].value_counts()),
        tasks_in_period=equipment["equipment_id"].map(tasks["equipment_id"].value_counts()),
    ).fillna({"alerts_in_period": 0, "tasks_in_period": 0})
    equipment = equipment.astype({"alerts_in_period": int, "tasks_in_period": int})
    history = (
        queries.prediction_history(scope.target, start, end, settings=settings)
        if scope.kind == "equipment" and scope.target is not None
        else pd.DataFrame()
    )
    return Report(
        scope=scope,
        start=start,
        end=end,
        generated_at=datetime.now(UTC),
        equipment=equipment.reset_index(drop=True),
        alerts=alerts,
        tasks=tasks,
        failures=failures,
        prediction_history=history,
        thresholds=queries.thresholds(settings),
    )


# -- PDF ----------------------------------------------------------------------------------------
def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _chart_png(draw) -> io.BytesIO:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 2.6), dpi=130)
    try:
        draw(ax)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    buffer.seek(0)
    return buffer


def _severity_chart(report: Report) -> io.BytesIO:
    counts = report.equipment["severity"].fillna(UNSCORED).value_counts()
    labels = [s for s in SEVERITY_COLORS if counts.get(s, 0)]

    def draw(ax):
        ax.barh(labels, [counts[s] for s in labels], color=[SEVERITY_COLORS[s] for s in labels])
        ax.set_xlabel("equipment")
        ax.set_title("Equipment by severity (latest prediction)", fontsize=10)

    return _chart_png(draw)


def _alerts_chart(report: Report) -> io.BytesIO:
    per_day = (
        report.alerts.assign(day=report.alerts["created_at"].dt.floor("D"))
        .groupby(["day", "severity"])
        .size()
        .unstack(fill_value=0)
    )

    def draw(ax):
        bottom = None
        for severity in [s for s in SEVERITY_COLORS if s in per_day.columns]:
            values = per_day[severity]
            ax.bar(
                per_day.index,
                values,
                bottom=bottom,
                color=SEVERITY_COLORS[severity],
                label=severity,
                width=0.8,
            )
            bottom = values if bottom is None else bottom + values
        ax.set_ylabel("alerts")
        ax.set_title("Alerts raised per day", fontsize=10)
        ax.legend(fontsize=7, frameon=False)
        ax.tick_params(axis="x", labelsize=7, rotation=30)

    return _chart_png(draw)


def _history_chart(report: Report) -> io.BytesIO:
    history = report.prediction_history
    bands = report.thresholds or queries.thresholds()

    def draw(ax):
        ax.plot(history["ts"], history["failure_probability"], color="#333333", linewidth=1.2)
        for band in Severity.banded():
            ax.axhline(bands[band.threshold_key], color=band.color, linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("failure probability")
        ax.set_title("Failure probability over the period", fontsize=10)
        ax.tick_params(axis="x", labelsize=7, rotation=30)

    return _chart_png(draw)


def _cell(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(pdf, frame: pd.DataFrame, columns: dict[str, str], widths: tuple, limit: int) -> None:
    if frame.empty:
        pdf.set_font(size=9)
        pdf.cell(0, 6, "None in this period.", new_x="LMARGIN", new_y="NEXT")
        return
    pdf.set_font(size=7.5)
    with pdf.table(col_widths=widths, text_align="LEFT", line_height=4.2) as table:
        header = table.row()
        for label in columns.values():
            header.cell(label)
        for record in frame.head(limit).itertuples(index=False):
            row = table.row()
            values = record._asdict()
            for column in columns:
                row.cell(_cell(values[column]))
    if len(frame) > limit:
        pdf.set_font(size=8)
        pdf.cell(
            0, 6, f"... and {len(frame) - limit} more (see the CSV).", new_x="LMARGIN", new_y="NEXT"
        )


def _heading(pdf, text: str) -> None:
    pdf.ln(3)
    pdf.set_font(style="B", size=12)
    pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(style="", size=9)


def _render_pdf(report: Report) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", format="A4")
    fonts = _font_dir()
    # A Unicode font: equipment notes and units (°C) are not Latin-1.
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_title(report.title)
    pdf.set_author("EMPS")
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.add_page()
    pdf.set_font("DejaVu", style="B", size=16)
    pdf.cell(0, 10, report.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=9)
    pdf.cell(0, 5, f"Period: {report.period}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(
        0, 5, f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC", new_x="LMARGIN", new_y="NEXT"
    )

    _heading(pdf, "Summary")
    summary = report.summary()
    pairs = [
        ("Equipment", summary["equipment"]),
        ("Critical / high", f"{summary['critical_equipment']} / {summary['high_equipment']}"),
        ("Medium / low", f"{summary['medium_equipment']} / {summary['low_equipment']}"),
        ("Not yet scored", summary["unscored_equipment"]),
        ("Alerts raised", summary["alerts_raised"]),
        ("Alerts still open", summary["alerts_open"]),
        ("Mean minutes to acknowledge", _cell(summary["mean_minutes_to_acknowledge"])),
        ("Tasks completed / open", f"{summary['tasks_completed']} / {summary['tasks_open']}"),
        ("Failures (caught by an alert)", f"{summary['failures']} ({summary['failures_caught']})"),
    ]
    with pdf.table(
        col_widths=(60, 40),
        width=100,
        align="LEFT",
        text_align="LEFT",
        first_row_as_headings=False,
        line_height=5,
    ) as table:
        for label, value in pairs:
            row = table.row()
            row.cell(label)
            row.cell(str(value))

    if summary["equipment"]:
        pdf.ln(3)
        pdf.image(_severity_chart(report), w=180)
    if not report.alerts.empty:
        pdf.image(_alerts_chart(report), w=180)
    if not report.prediction_history.empty:
        pdf.image(_history_chart(report), w=180)

    _heading(pdf, "Equipment most at risk")
    _table(
        pdf,
        report.equipment,
        {
            "equipment_id": "Equipment",
            "equipment_type": "Type",
            "site": "Site",
            "health_score": "Health",
            "severity": "Severity",
            "days_until_failure": "Days to failure",
            "alerts_in_period": "Alerts",
            "next_task_date": "Next task",
        },
        (26, 24, 22, 14, 18, 18, 14, 26),
        limit=40,
    )
    _heading(pdf, "Alerts in the period")
    _table(
        pdf,
        report.alerts,
        {
            "alert_id": "#",
            "equipment_id": "Equipment",
            "severity": "Severity",
            "status": "Status",
            "created_at": "Raised",
            "minutes_to_acknowledge": "Min. to ack",
            "message": "Message",
        },
        (10, 24, 18, 22, 28, 16, 62),
        limit=60,
    )
    _heading(pdf, "Maintenance in the period")
    _table(
        pdf,
        report.tasks,
        {
            "task_id": "#",
            "equipment_id": "Equipment",
            "task_type": "Type",
            "priority": "Priority",
            "status": "Status",
            "scheduled_date": "Scheduled",
            "outcome": "Outcome",
        },
        (10, 26, 22, 14, 22, 30, 36),
        limit=60,
    )
    if not report.failures.empty:
        _heading(pdf, "Failures")
        _table(
            pdf,
            report.failures,
            {
                "equipment_id": "Equipment",
                "failed_at": "Failed at",
                "failure_mode": "Mode",
                "caught": "Alert before",
                "warning_hours": "Warning (h)",
            },
            (30, 34, 40, 24, 24),
            limit=60,
        )
    return bytes(pdf.output())
