-- One row per maintenance task not yet completed or cancelled, with where the equipment is.
with tasks as (
    select * from {{ ref('stg_maintenance_tasks') }}
),

equipment as (
    select * from {{ ref('stg_equipment') }}
),

final as (
    select
        tasks.task_id,
        tasks.equipment_id,
        equipment.equipment_type,
        equipment.site,
        tasks.alert_id,
        tasks.task_type,
        tasks.priority,
        tasks.status,
        tasks.scheduled_date,
        tasks.notes,
        tasks.created_by,
        tasks.created_at,
        tasks.scheduled_date < now() as is_overdue
    from tasks
    inner join equipment on tasks.equipment_id = equipment.equipment_id
    where tasks.status not in ('completed', 'cancelled')
)

select * from final
