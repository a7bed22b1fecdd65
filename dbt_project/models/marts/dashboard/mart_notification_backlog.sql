-- One row: the notifications due and not yet delivered (not sent, not dead) and how long the
-- one waiting longest has been due. A notification held back by quiet hours is not waiting
-- until its time comes. A view over the outbox, counted when read.
with notifications as (
    select * from {{ ref('stg_notification_deliveries') }}
),

waiting as (
    select
        notifications.notification_id,
        notifications.due_at
    from notifications
    where
        notifications.status in ('pending', 'failed', 'sending')
        and notifications.due_at <= now()
),

oldest as (
    select
        waiting.notification_id,
        waiting.due_at
    from waiting
    order by waiting.due_at asc, waiting.notification_id asc
    limit 1
),

counted as (
    select count(*) as waiting from waiting
),

final as (
    select
        oldest.notification_id as oldest_notification_id,
        oldest.due_at as oldest_due_at,
        counted.waiting,
        coalesce(
            greatest(date_part('epoch', now() - oldest.due_at), 0), 0
        )::float8 as oldest_age_s
    from counted
    left join oldest on true
)

select * from final
