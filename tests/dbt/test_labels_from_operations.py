"""What crews find becomes labels: a machine found failed at service records its failure, a
fault found in time records a prevented failure, and the training examples learn from both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from dbt_testdata import first_type, insert_equipment, insert_readings, read_table, series

from emps import transform
from emps.catalog import load_catalog

START = datetime(2026, 3, 1, tzinfo=UTC)


def complete_task(conn, equipment_id, at, outcome, task_type="inspection", alert_id=None):
    conn.execute(
        "insert into ops.maintenance_tasks (equipment_id, alert_id, task_type, status, "
        "scheduled_date, completed_date, outcome, created_by) "
        "values (%s, %s, %s, 'completed', %s, %s, %s, 'test')",
        (equipment_id, alert_id, task_type, at, at, outcome),
    )


def failures(settings) -> pd.DataFrame:
    return read_table(
        settings,
        "select equipment_id, failed_at, source, prevented from raw.failure_events "
        "order by equipment_id",
    )


def test_outcomes_of_completed_tasks_record_failures(writer, db):
    """failed_before_service records a failure, fault_found a prevented one; a repair that found
    the fault of a failure already recorded, and no_fault_found, record nothing."""
    kind = first_type()
    insert_equipment(writer, [(f"M-{i}", kind, None) for i in range(1, 5)])
    at = START + timedelta(days=3)
    complete_task(writer, "M-1", at, "failed_before_service", "preventive")
    complete_task(writer, "M-2", at, "fault_found", "inspection")
    complete_task(writer, "M-3", at, "fault_found", "repair")
    complete_task(writer, "M-4", at, "no_fault_found", "preventive")
    found = failures(db).set_index("equipment_id")
    assert set(found.index) == {"M-1", "M-2"}
    assert found.loc["M-1", "source"] == "maintenance" and not found.loc["M-1", "prevented"]
    assert found.loc["M-2", "prevented"]
    assert found.loc["M-1", "failed_at"] == at


def test_a_prevented_failure_labels_its_run_up_as_leading_to_failure(writer, db):
    """The hours before a fault found in time are positive examples with no remaining life
    (it never failed); after it, the machine is healthy again."""
    catalog = load_catalog()
    kind = first_type(catalog)
    horizon = timedelta(seconds=catalog.equipment_types[kind].horizon_seconds)
    insert_equipment(writer, [("M-7", kind, None)])
    insert_readings(writer, series("M-7", START, periods=24 * 20, minutes=60))
    found_at = START + timedelta(days=10)
    complete_task(writer, "M-7", found_at, "fault_found", "inspection")
    transform.build(
        select=["+fct_equipment_features", "mart_training_examples"], full_refresh=True, settings=db
    )
    examples = read_table(db, "select * from analytics.mart_training_examples order by ts")
    before = examples[(examples["ts"] >= found_at - horizon) & (examples["ts"] < found_at)]
    assert len(before) and before["fails_within_horizon"].all()
    assert before["remaining_life"].isna().all() and before["days_until_failure"].isna().all()
    after = examples[examples["ts"] >= found_at]
    assert not after["fails_within_horizon"].any()


def test_held_out_units_never_train(writer, db):
    """A fleet pack's test units (held out) have feature rows but no training examples."""
    kind = first_type()
    insert_equipment(writer, [("M-8", kind, None), ("T-1", kind, None)])
    writer.execute("update raw.equipment set holdout = true where equipment_id = 'T-1'")
    insert_readings(
        writer,
        pd.concat([series(e, START, periods=24 * 3, minutes=60) for e in ("M-8", "T-1")]),
    )
    transform.build(
        select=["+fct_equipment_features", "mart_training_examples"], full_refresh=True, settings=db
    )
    examples = read_table(db, "select distinct equipment_id from analytics.mart_training_examples")
    features = read_table(db, "select distinct equipment_id from analytics.fct_equipment_features")
    assert set(examples["equipment_id"]) == {"M-8"}
    assert set(features["equipment_id"]) == {"M-8", "T-1"}
