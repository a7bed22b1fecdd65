-- One row per alert on the platform's own health (a stalled flow, a full disk, ...).
with source as (
    select * from {{ source('ops', 'operations_alerts') }}
),

final as (
    select
        id as operations_alert_id,
        rule,
        subject,
        status,
        summary,
        opened_at,
        last_seen_at,
        resolved_at,
        notifications
    from source
)

select * from final
