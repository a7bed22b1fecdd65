-- What "a notification waiting to be sent" means, written once: due (quiet hours over) and
-- neither sent nor given up. The dashboard's mart (analytics.mart_notification_backlog) reads it
-- as of now(); the operations alert on the outbox, /metrics, the alert flow's log and
-- `emps notify status` read it as of the time they are given. It reads the delivery-state view,
-- so it runs as any role that may see the outbox's states: the reader, dbt's role, alerting.
create or replace function ops.notification_backlog(p_now timestamptz)
returns table (
    waiting bigint, oldest_notification_id bigint, oldest_due_at timestamptz, oldest_age_s float8
)
language sql stable set search_path = pg_catalog, pg_temp
as $$
    with waiting as (
        select d.id, d.due_at
        from ops.notification_deliveries d
        where d.status in ('pending', 'failed', 'sending') and d.due_at <= p_now
    ),
    oldest as (
        select w.id, w.due_at from waiting w order by w.due_at, w.id limit 1
    )
    select
        (select count(*) from waiting),
        oldest.id,
        oldest.due_at,
        coalesce(greatest(extract(epoch from p_now - oldest.due_at), 0), 0)::float8
    from (select 1) one
    left join oldest on true
$$;
comment on function ops.notification_backlog(timestamptz) is
    'One row: how many notifications wait to be sent as of p_now, and the oldest of them.';
revoke all on function ops.notification_backlog(timestamptz) from public;
grant execute on function ops.notification_backlog(timestamptz)
    to emps_reader, emps_writer, emps_alerting;
