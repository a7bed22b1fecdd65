-- One row: the notifications due and not yet delivered (not sent, not dead) and how long the
-- one waiting longest has been due. Which notifications wait is ops.notification_backlog's rule
-- (migration 0190), the one the operations alert and /metrics read too; the outbox it reads:
-- depends_on: {{ ref('stg_notification_deliveries') }}
-- A view, counted when read.
with backlog as (
    select * from ops.notification_backlog(now())
),

final as (
    select
        backlog.oldest_notification_id,
        backlog.oldest_due_at,
        backlog.waiting,
        backlog.oldest_age_s
    from backlog
)

select * from final
