-- One row per alert on the platform's own health. A view: a new or cleared one shows at once.
with operations_alerts as (
    select * from {{ ref('stg_operations_alerts') }}
),

final as (
    select
        operations_alert_id,
        rule,
        subject,
        status,
        summary,
        opened_at,
        last_seen_at,
        resolved_at,
        notifications
    from operations_alerts
)

select * from final
