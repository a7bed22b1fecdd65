-- One row per maintenance task.
with source as (
    select * from {{ source('ops', 'maintenance_tasks') }}
),

final as (
    select
        id as task_id,
        equipment_id,
        alert_id,
        task_type,
        priority,
        status,
        scheduled_date,
        completed_date,
        outcome,
        notes,
        created_by,
        created_at
    from source
)

select * from final
