-- One row per maintenance task, any status, with its equipment's type and site. A view over
-- the ops table: a task scheduled or completed shows at once.
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
        tasks.completed_date,
        tasks.outcome,
        tasks.notes,
        tasks.created_by,
        tasks.created_at
    from tasks
    inner join equipment on tasks.equipment_id = equipment.equipment_id
)

select * from final
