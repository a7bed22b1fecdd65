-- One row per day (UTC, alert creation), severity and status: counts and response times,
-- archived alerts included (retention keeps their summary).
with alerts as (
    select
        severity,
        status,
        created_at,
        acknowledged_at,
        resolved_at
    from {{ ref('stg_alerts') }}
    union all
    select
        severity,
        status,
        created_at,
        acknowledged_at,
        resolved_at
    from {{ ref('stg_archived_alerts') }}
),

final as (
    select
        alerts.severity,
        alerts.status,
        date_trunc('day', alerts.created_at at time zone 'UTC')::date as day,  -- noqa: RF04
        count(*) as alert_count,
        avg(date_part('epoch', alerts.acknowledged_at - alerts.created_at) / 60.0)
            as mean_minutes_to_acknowledge,
        avg(date_part('epoch', alerts.resolved_at - alerts.created_at) / 60.0)
            as mean_minutes_to_resolve
    from alerts
    group by date_trunc('day', alerts.created_at at time zone 'UTC')::date, alerts.severity, alerts.status
)

select * from final
