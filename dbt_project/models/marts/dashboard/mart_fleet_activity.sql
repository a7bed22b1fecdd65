-- One row: unresolved alerts per severity band and unacknowledged, and the predictions written
-- in the last hour. A view, counted when read.
with alerts as (
    select * from {{ ref('stg_alerts') }}
),

predictions as (
    select * from {{ ref('stg_predictions') }}
),

recent_predictions as (
    select count(*) as predictions_last_hour
    from predictions
    -- The ts bound lets the planner skip all but the newest month partitions.
    where
        predictions.ts > now() - interval '2 hours'
        and predictions.predicted_at > now() - interval '1 hour'
),

active_alerts as (
    select
        {% for level in severities() | reverse -%}
            count(*) filter (where alerts.severity = '{{ level }}') as alerts_{{ level | lower }},
        {% endfor -%}
        count(*) filter (where alerts.status = 'open') as alerts_unacknowledged
    from alerts
    where alerts.status <> 'resolved'
),

final as (
    select
        recent_predictions.predictions_last_hour,
        {% for level in severities() | reverse -%}
            active_alerts.alerts_{{ level | lower }},
        {% endfor -%}
        active_alerts.alerts_unacknowledged
    from recent_predictions
    cross join active_alerts
)

select * from final
