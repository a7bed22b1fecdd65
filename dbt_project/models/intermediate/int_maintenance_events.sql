{{ config(materialized='view') }}
-- One row per time an equipment was serviced: a completed maintenance task or a repair.
with tasks as (
    select * from {{ ref('stg_maintenance_tasks') }}
),

failures as (
    select * from {{ ref('stg_failure_events') }}
),

final as (
    select
        equipment_id,
        completed_date as serviced_at,
        'maintenance_task' as kind
    from tasks
    where status = 'completed' and completed_date is not null
    union all
    select
        equipment_id,
        repaired_at as serviced_at,
        'repair' as kind
    from failures
    where repaired_at is not null
)

select * from final
