-- One row per day (UTC, alert creation), severity and status: counts and response times.
with alerts as (
    select * from {{ ref('stg_alerts') }}
),

final as (
    select
        date_trunc('day', alerts.created_at at time zone 'UTC')::date as day,
        alerts.severity,
        alerts.status,
        count(*) as alert_count,
        avg(date_part('epoch', alerts.acknowledged_at - alerts.created_at) / 60.0)
            as mean_minutes_to_acknowledge,
        avg(date_part('epoch', alerts.resolved_at - alerts.created_at) / 60.0)
            as mean_minutes_to_resolve
    from alerts
    group by 1, alerts.severity, alerts.status
)

select * from final
