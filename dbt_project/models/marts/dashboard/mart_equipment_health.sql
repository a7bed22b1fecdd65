-- One row per equipment: its latest prediction, open alert, next maintenance task and data age.
-- A silent equipment's last prediction ages out: past the silence limit its probability,
-- severity, health and remaining life read null (`last_severity` keeps what it was) and its
-- assessment reads insufficient_data, with how long it has been silent as the reason.
--
-- The latest prediction and last reading come from small tables refreshed after every scoring
-- run (mart_equipment_latest_prediction, mart_equipment_last_reading; their refresh times are
-- prediction_as_of and last_reading_as_of). The open alert and next task are read live from the
-- ops tables, so an acknowledgement or a new task shows on the next page load.
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

last_readings as (
    select * from {{ ref('mart_equipment_last_reading') }}
),

latest_predictions as (
    select * from {{ ref('mart_equipment_latest_prediction') }}
),

alerts as (
    select * from {{ ref('stg_alerts') }}
),

tasks as (
    select * from {{ ref('stg_maintenance_tasks') }}
),

-- The most severe unresolved alert per equipment, newest first among equals. Unresolved alerts
-- are few; DISTINCT ON keeps the join removable when a query reads no alert column.
open_alerts as (
    select distinct on (alerts.equipment_id)
        alerts.equipment_id,
        alerts.alert_id,
        alerts.severity,
        alerts.status
    from alerts
    where alerts.status <> 'resolved'
    order by
        alerts.equipment_id asc,
        {{ severity_rank('alerts.severity') }} desc,
        alerts.created_at desc
),

next_tasks as (
    select distinct on (tasks.equipment_id)
        tasks.equipment_id,
        tasks.task_id,
        tasks.task_type,
        tasks.scheduled_date
    from tasks
    where tasks.status in ('scheduled', 'in_progress')
    order by tasks.equipment_id, tasks.scheduled_date
),

silence as (
    select
        equipment.equipment_id,
        last_readings.last_reading_at,
        date_part('epoch', now() - last_readings.last_reading_at) / 60.0
            as minutes_since_last_reading,
        coalesce(
            last_readings.last_reading_at
            < now() - {{ silent_limit() }},
            true
        ) as is_silent
    from equipment
    left join last_readings on equipment.equipment_id = last_readings.equipment_id
),

final as (
    select
        equipment.equipment_id,
        equipment.equipment_type,
        equipment.site,
        silence.last_reading_at,
        silence.minutes_since_last_reading,
        silence.is_silent,
        case when not silence.is_silent then latest_predictions.failure_probability end
            as failure_probability,
        case when not silence.is_silent then latest_predictions.health_score end
            as health_score,
        case when not silence.is_silent then latest_predictions.severity end as severity,
        case when not silence.is_silent then latest_predictions.days_until_failure end
            as days_until_failure,
        case when not silence.is_silent then latest_predictions.remaining_life end
            as remaining_life,
        latest_predictions.life_unit,
        case when not silence.is_silent then latest_predictions.remaining_life_beyond end
            as remaining_life_beyond,
        case
            when silence.is_silent then 'insufficient_data'
            else latest_predictions.assessment
        end as assessment,
        case
            when silence.is_silent and silence.last_reading_at is null
                then 'no readings yet'
            when silence.is_silent
                then
                    'no readings for '
                    || round(silence.minutes_since_last_reading)::bigint
                    || ' min (silence limit '
                    || round(date_part('epoch', {{ silent_limit() }}) / 60.0)::bigint
                    || ' min)'
            else latest_predictions.assessment_reason
        end as assessment_reason,
        latest_predictions.severity as last_severity,
        latest_predictions.model_version,
        latest_predictions.predicted_at,
        latest_predictions.explanation,
        open_alerts.alert_id as open_alert_id,
        open_alerts.severity as open_alert_severity,
        open_alerts.status as open_alert_status,
        next_tasks.task_id as next_task_id,
        next_tasks.task_type as next_task_type,
        next_tasks.scheduled_date as next_task_date,
        last_readings.refreshed_at as last_reading_as_of,
        latest_predictions.refreshed_at as prediction_as_of
    from equipment
    inner join silence on equipment.equipment_id = silence.equipment_id
    left join last_readings on equipment.equipment_id = last_readings.equipment_id
    left join latest_predictions on equipment.equipment_id = latest_predictions.equipment_id
    left join open_alerts on equipment.equipment_id = open_alerts.equipment_id
    left join next_tasks on equipment.equipment_id = next_tasks.equipment_id
)

select * from final
