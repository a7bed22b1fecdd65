"""The refresh a scoring run makes of the dashboard's state tables, for tests that write
predictions or seed rows themselves."""

from __future__ import annotations

from emps.db import Role, connect
from emps.settings import Settings


def refresh_dashboard_state(settings: Settings) -> None:
    """Bring the latest-prediction and last-reading tables to what ops and raw hold now, with
    the refresh the scoring flow runs (selector `dashboard_state`). Emptied first: each test's
    reset empties their sources, which an incremental run would not notice, and a
    --full-refresh of just these tables would drop the views built on them."""
    from emps.transform import DASHBOARD_STATE_SELECTOR, dbt_args, run_dbt

    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "truncate analytics.mart_equipment_last_reading, "
            "analytics.mart_equipment_latest_prediction"
        )
    summary = run_dbt(dbt_args(["run"], settings, selector=DASHBOARD_STATE_SELECTOR), settings)
    assert summary.success, summary.describe_failures()
