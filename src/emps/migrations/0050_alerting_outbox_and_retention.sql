-- Alerting: a lease on outbox rows being sent, and retention of old month partitions.

-- A sender marks a row 'sending' until lease_expires_at. A sender that dies mid-batch leaves the
-- lease to expire; the next sender picks the row up again (same dedupe_key, same Message-ID).
alter table ops.notifications add column if not exists lease_expires_at timestamptz;
alter table ops.notifications add column if not exists claimed_by text;
alter table ops.notifications add column if not exists event text not null default 'alert.opened';
-- Files attached to an email (the daily report's PDF and CSV), read when the message is sent.
alter table ops.notifications add column if not exists attachments text[] not null default '{}';
create index if not exists notifications_sending_idx
    on ops.notifications (lease_expires_at) where status = 'sending';
create index if not exists notifications_alert_idx on ops.notifications (alert_id);

-- Month partitions (named <table>_yYYYYmMM by ops.ensure_month_partitions) whose whole month ends
-- before p_before are detached (kept as plain tables for archiving) or dropped. SECURITY DEFINER
-- because the writer role running the cleanup flow does not own the partitioned tables.
create or replace function ops.retire_month_partitions(
    parent regclass, p_before timestamptz, p_mode text default 'detach'
) returns setof text
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    schema_name text;
    table_name text;
    part record;
    month_start date;
begin
    if p_mode not in ('detach', 'drop') then
        raise exception 'partition retention mode % is not one of detach, drop', p_mode
            using errcode = 'check_violation';
    end if;
    select n.nspname, c.relname into schema_name, table_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = parent;
    for part in
        select cn.nspname as part_schema, c.relname as part_name
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_namespace cn on cn.oid = c.relnamespace
        where i.inhparent = parent
          and c.relname ~ ('^' || table_name || '_y[0-9]{4}m[0-9]{2}$')
        order by c.relname
    loop
        month_start := to_date(right(part.part_name, 7), '"y"YYYY"m"MM');
        if (month_start + interval '1 month') <= (p_before at time zone 'UTC') then
            execute format('alter table %I.%I detach partition %I.%I',
                           schema_name, table_name, part.part_schema, part.part_name);
            if p_mode = 'drop' then
                execute format('drop table %I.%I', part.part_schema, part.part_name);
            end if;
            insert into ops.audit_log (actor, action, target_type, target_id, details)
            values ('emps-retention', 'partition.' || p_mode, 'partition',
                    part.part_schema || '.' || part.part_name,
                    jsonb_build_object('parent', schema_name || '.' || table_name,
                                       'before', p_before));
            return next part.part_schema || '.' || part.part_name;
        end if;
    end loop;
end
$$;

revoke all on function ops.retire_month_partitions(regclass, timestamptz, text) from public;
grant execute on function ops.retire_month_partitions(regclass, timestamptz, text) to emps_writer;
