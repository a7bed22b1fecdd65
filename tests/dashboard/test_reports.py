"""emps.reports: the report the Reports page downloads and the daily email attaches."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pypdf import PdfReader

from emps.reports import ReportError, ReportScope, build_report


def _week() -> tuple[datetime, datetime]:
    end = datetime.now(UTC) + timedelta(minutes=1)
    return end - timedelta(days=7), end


def test_equipment_report_has_history_chart_and_its_rows(fleet):
    """An equipment report's PDF has its charts and alert, and its CSV has exactly that equipment."""
    report = build_report("equipment:GEN-0001", *_week())
    reader = PdfReader(io.BytesIO(report.pdf_bytes()))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "EMPS Equipment GEN-0001 report" in text
    assert "bearing temperature high" in text  # the alert message, as text
    images = sum(len(page.images) for page in reader.pages)
    assert images == 3  # severity, alerts per day, failure probability over time
    rows = pd.read_csv(io.BytesIO(report.csv_bytes()))
    assert rows["equipment_id"].tolist() == ["GEN-0001"]
    assert rows.loc[0, "severity"] == "CRITICAL"
    assert rows.loc[0, "alerts_in_period"] == 1
    assert report.filename("pdf").startswith("emps-equipment-gen-0001-")


def test_fleet_report_summary_counts(fleet):
    """The fleet report's summary counts severities, alerts, tasks and caught failures."""
    summary = build_report("fleet", *_week()).summary()
    assert summary["equipment"] == 5
    assert (summary["critical_equipment"], summary["unscored_equipment"]) == (1, 1)
    assert summary["alerts_raised"] == 3
    assert summary["failures"] == 2 and summary["failures_caught"] == 1


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("equipment:NOPE-1", "equipment NOPE-1 is not registered"),
        ("site:NOWHERE", "site NOWHERE has no registered equipment"),
        ("galaxy", "must be 'fleet', 'site:<site>' or 'equipment:<equipment id>'"),
    ],
)
def test_bad_scope_says_why(fleet, scope, message):
    """A report for something that does not exist fails with a message naming it."""
    with pytest.raises(ReportError, match=message):
        build_report(scope, *_week())


def test_scope_parsing():
    """Scopes parse from the short text form the CLI and email use."""
    assert ReportScope.parse("site:ALPHA") == ReportScope("site", "ALPHA")
    assert ReportScope.parse("fleet").title == "Fleet"


def test_csv_cells_that_look_like_formulas_stay_text(fleet, db):
    """A site name a spreadsheet would run as a formula (CSV injection) is written as text: a
    leading `'`, the name otherwise whole."""
    from emps.db import Role, connect

    site = '=HYPERLINK("http://attacker.example","open")'
    with connect(Role.OWNER, db) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site)"
            " values ('GEN-0099', 'generator', %s)",
            (site,),
        )
    rows = pd.read_csv(io.BytesIO(build_report(f"site:{site}", *_week()).csv_bytes()))
    assert rows["site"].tolist() == ["'" + site]
    assert rows["equipment_id"].tolist() == ["GEN-0099"]
