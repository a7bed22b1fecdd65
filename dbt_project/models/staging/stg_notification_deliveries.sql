-- One row per notification in the outbox: its delivery state and when it is due (the reader's
-- view: no recipient, text or error).
with source as (
    select * from {{ source('ops', 'notification_deliveries') }}
),

final as (
    select
        id as notification_id,
        alert_id,
        channel,
        event,
        status,
        attempts,
        next_attempt_at,
        created_at,
        sent_at,
        due_at
    from source
)

select * from final
