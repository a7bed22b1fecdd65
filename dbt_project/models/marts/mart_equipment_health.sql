-- One row per equipment: its latest prediction, open alert, next maintenance task and data age.
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

freshness as (
    select * from {{ ref('mart_data_freshness') }}
),

predictions as (
    select * from {{ ref('stg_predictions') }}
),

alerts as (
    select * from {{ ref('stg_alerts') }}
),

tasks as (
    select * from {{ ref('stg_maintenance_tasks') }}
),

final as (
    select
        equipment.equipment_id,
        equipment.equipment_type,
        equipment.site,
        freshness.last_reading_at,
        freshness.minutes_since_last_reading,
        latest_prediction.failure_probability,
        latest_prediction.health_score,
        latest_prediction.severity,
        latest_prediction.days_until_failure,
        latest_prediction.model_version,
        latest_prediction.predicted_at,
        latest_prediction.explanation,
        open_alert.alert_id as open_alert_id,
        open_alert.severity as open_alert_severity,
        open_alert.status as open_alert_status,
        next_task.task_id as next_task_id,
        next_task.task_type as next_task_type,
        next_task.scheduled_date as next_task_date
    from equipment
    left join freshness on equipment.equipment_id = freshness.equipment_id
    left join lateral (
        select predictions.*
        from predictions
        where predictions.equipment_id = equipment.equipment_id
        order by predictions.ts desc, predictions.predicted_at desc
        limit 1
    ) as latest_prediction on true
    left join lateral (
        -- The most severe unresolved alert, newest first among equals.
        select alerts.*
        from alerts
        where alerts.equipment_id = equipment.equipment_id and alerts.status <> 'resolved'
        order by
            case alerts.severity
                when 'CRITICAL' then 4 when 'HIGH' then 3 when 'MEDIUM' then 2 else 1
            end desc,
            alerts.created_at desc
        limit 1
    ) as open_alert on true
    left join lateral (
        select tasks.*
        from tasks
        where
            tasks.equipment_id = equipment.equipment_id
            and tasks.status in ('scheduled', 'in_progress')
        order by tasks.scheduled_date
        limit 1
    ) as next_task on true
)

select * from final
