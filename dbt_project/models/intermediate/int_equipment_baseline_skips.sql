{{ config(materialized='view') }}
-- One row per equipment per baseline period its trailing baseline skips (wall-time types with
-- a baseline_lag): a period holding any time from a horizon before a recorded failure (a
-- failure found at a service, or prevented, too) to its repair is no healthy reference, as
-- the fault may already show in it. A slot whose period (macro baseline_period) is skipped is
-- compared with the last period before that run of skipped periods, `reference_period` (or
-- with its first span if that period starts before its first slot).
-- A failure counts only for the periods first compared with after it (in a later slot), so
-- no feature row knows of a failure after it: with a lag of at least a horizon (the default
-- is two) that is every period it touches.
-- A view: a failure recorded later changes the baseline of the slots built after it.
with failures as (
    select * from {{ ref('stg_failure_events') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

faults as (
    -- Each failure's span in slots: from a horizon before it to its repair, and its own slot.
    select
        failures.equipment_id,
        equipment.baseline_slots,
        equipment.baseline_lag_slots,
        floor(
            (date_part('epoch', failures.failed_at) - equipment.horizon_seconds) / equipment.slot_width
        )::bigint as from_slot,
        floor(
            date_part('epoch', coalesce(failures.repaired_at, failures.failed_at)) / equipment.slot_width
        )::bigint as to_slot,
        floor(date_part('epoch', failures.failed_at) / equipment.slot_width)::bigint as failed_slot
    from failures
    inner join equipment on failures.equipment_id = equipment.equipment_id
    where equipment.axis = 'time' and equipment.baseline_lag_slots is not null
),

skipped as (
    -- The periods each span touches, from the first one compared with after the failure's slot
    -- (period p is first compared with at slot (p + 1) x baseline + lag - 1).
    select distinct
        faults.equipment_id,
        periods.period
    from faults
    cross join lateral generate_series(
        greatest(
            floor(faults.from_slot::float8 / faults.baseline_slots)::bigint,
            floor((faults.failed_slot - faults.baseline_lag_slots + 1)::float8 / faults.baseline_slots)::bigint
        ),
        floor(faults.to_slot::float8 / faults.baseline_slots)::bigint
    ) as periods (period)
),

runs as (
    -- Consecutive skipped periods share a run number.
    select
        equipment_id,
        period,
        period - row_number() over (partition by equipment_id order by period) as run
    from skipped
),

final as (
    select
        equipment_id,
        period,
        min(period) over (partition by equipment_id, run) - 1 as reference_period
    from runs
)

select * from final
