-- One row per maintenance task not yet completed or cancelled, with where the equipment is:
-- mart_maintenance_tasks narrowed to the open ones.
with tasks as (
    select * from {{ ref('mart_maintenance_tasks') }}
),

final as (
    select
        task_id,
        equipment_id,
        equipment_type,
        site,
        alert_id,
        task_type,
        priority,
        status,
        scheduled_date,
        notes,
        created_by,
        created_at,
        scheduled_date < now() as is_overdue
    from tasks
    where status not in ('completed', 'cancelled')
)

select * from final
