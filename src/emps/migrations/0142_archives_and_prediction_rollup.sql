-- Bounded growth for a platform that runs for years (emps.alerting.retention, the daily
-- cleanup flow as the alerting role):
-- * evidence is archived, not deleted: old audit entries, delivered notifications, resolved
--   alerts (with their notifications), resolved operations alerts and quarantined rows are
--   taken out of their tables by ops.take_for_archive(), which hands them to the cleanup flow
--   to write as compressed files; the file is recorded in ops.archive_files in the same
--   transaction as the delete, so a row is either in its table or in a recorded file;
-- * an archived alert leaves a summary in ops.archived_alerts (what the Analytics page counts:
--   caught and missed failures, alert volumes and response times do not change);
-- * the ingest ledger and expired sign-in tokens are deleted by ops.prune_ingest_ledger
--   (migration 0143);
-- * predictions older than the detail window are rolled up per equipment and hour into
--   ops.predictions_hourly, and their month partitions emptied.

create table if not exists ops.archive_files (
    id bigserial primary key,
    kind text not null,
    path text not null unique,
    row_count integer not null check (row_count > 0),
    sha256 text not null,
    size_bytes bigint not null,
    taken_before timestamptz not null,
    created_at timestamptz not null default now()
);
comment on table ops.archive_files is
    'Compressed JSON-lines files under <home>/records/ holding rows taken out of their table.';

create table if not exists ops.archived_alerts (
    id bigint primary key,
    equipment_id text not null,
    severity text not null,
    failure_mode text,
    created_at timestamptz not null,
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    escalation_level integer not null default 0,
    archived_at timestamptz not null default now()
);
create index if not exists archived_alerts_equipment_idx
    on ops.archived_alerts (equipment_id, created_at);
comment on table ops.archived_alerts is
    'What stays of an archived alert: enough for the Analytics counts; the rest is in its file.';

create table if not exists ops.predictions_hourly (
    equipment_id text not null,
    hour timestamptz not null,
    predictions integer not null,
    mean_probability double precision not null,
    max_probability double precision not null,
    min_health_score smallint not null,
    worst_severity text not null,
    last_ts timestamptz not null,
    model_version text not null,
    primary key (equipment_id, hour)
);
comment on table ops.predictions_hourly is
    'Predictions past EMPS_PREDICTION_DETAIL_DAYS, one row per equipment and hour.';

grant select on ops.archive_files, ops.archived_alerts, ops.predictions_hourly
    to emps_reader, emps_writer, emps_alerting;
grant insert on ops.archive_files to emps_alerting;
grant usage on sequence ops.archive_files_id_seq to emps_alerting;

create or replace function ops.take_for_archive(
    p_kind text, p_before timestamptz, p_limit integer
) returns setof jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    -- Never anything of the last day, whatever the caller's clock says.
    p_before := least(p_before, now() - interval '1 day');
    if p_limit not between 1 and 100000 then
        raise exception 'archive batches hold 1 to 100000 rows, not %', p_limit
            using errcode = 'check_violation';
    end if;
    if p_kind = 'audit_log' then
        return query
        with taken as (
            delete from ops.audit_log where id in (
                select id from ops.audit_log where at < p_before
                order by id limit p_limit for update skip locked)
            returning *)
        select to_jsonb(taken) from taken;
    elsif p_kind = 'notifications' then
        -- Mail and texts of no alert (operations alerts, reports) once delivered or given up.
        return query
        with taken as (
            delete from ops.notifications where id in (
                select id from ops.notifications
                where alert_id is null and status in ('sent', 'dead') and created_at < p_before
                order by id limit p_limit for update skip locked)
            returning *)
        select to_jsonb(taken) from taken;
    elsif p_kind = 'alerts' then
        -- Resolved alerts whose every notification is delivered or given up, with them.
        return query
        with chosen as (
            select a.id from ops.alerts a
            where a.status = 'resolved' and a.resolved_at < p_before
              and not exists (
                  select 1 from ops.notifications n
                  where n.alert_id = a.id and n.status in ('pending', 'sending', 'failed'))
            order by a.id limit p_limit for update skip locked
        ),
        notes as (
            delete from ops.notifications n using chosen where n.alert_id = chosen.id
            returning n.*
        ),
        taken as (
            delete from ops.alerts a using chosen where a.id = chosen.id returning a.*
        ),
        summaries as (
            insert into ops.archived_alerts (
                id, equipment_id, severity, failure_mode, created_at, acknowledged_at,
                resolved_at, escalation_level)
            select id, equipment_id, severity, failure_mode, created_at, acknowledged_at,
                   resolved_at, escalation_level
            from taken
            on conflict (id) do nothing
        )
        select to_jsonb(taken) || jsonb_build_object('notifications', coalesce(
            (select jsonb_agg(to_jsonb(notes) order by notes.id) from notes
             where notes.alert_id = taken.id), '[]'::jsonb))
        from taken;
    elsif p_kind = 'operations_alerts' then
        return query
        with taken as (
            delete from ops.operations_alerts where id in (
                select id from ops.operations_alerts
                where status = 'resolved' and resolved_at < p_before
                order by id limit p_limit for update skip locked)
            returning *)
        select to_jsonb(taken) from taken;
    elsif p_kind = 'quarantined_rows' then
        -- Never an unresolved conflict, nor a row an admin asked to retry.
        return query
        with taken as (
            delete from raw.quarantined_rows where id in (
                select id from raw.quarantined_rows
                where quarantined_at < p_before
                  and not (resolution is null
                           and (kind = 'conflict' or retry_requested_at is not null))
                order by id limit p_limit for update skip locked)
            returning *)
        select to_jsonb(taken) from taken;
    else
        raise exception 'no archive of %', p_kind using errcode = 'invalid_parameter_value';
    end if;
end
$$;

create or replace function ops.roll_up_predictions(p_before timestamptz, p_keep_after timestamptz)
returns table (partition_name text, rolled_up bigint)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    part record;
    month_start date;
    n bigint;
begin
    -- Never anything of the last day, whatever the caller's clock says.
    p_before := least(p_before, now() - interval '1 day');
    for part in
        select cn.nspname as part_schema, c.relname as part_name
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_namespace cn on cn.oid = c.relnamespace
        where i.inhparent = 'ops.predictions'::regclass
          and c.relname ~ '^predictions_y[0-9]{4}m[0-9]{2}$'
        order by c.relname
    loop
        month_start := to_date(right(part.part_name, 8), '"y"YYYY"m"MM');
        continue when (month_start + interval '1 month') > (p_before at time zone 'UTC');
        execute format('select count(*) from %I.%I', part.part_schema, part.part_name) into n;
        continue when n = 0;
        execute format($q$
            insert into ops.predictions_hourly as h (
                equipment_id, hour, predictions, mean_probability, max_probability,
                min_health_score, worst_severity, last_ts, model_version)
            select equipment_id, date_trunc('hour', ts), count(*), avg(failure_probability),
                   max(failure_probability), min(health_score),
                   (array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'])[max(array_position(
                       array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'], severity))],
                   max(ts), (array_agg(model_version order by ts desc))[1]
            from %I.%I
            where ts >= $1
            group by equipment_id, date_trunc('hour', ts)
            on conflict (equipment_id, hour) do update set
                predictions = h.predictions + excluded.predictions,
                mean_probability = (h.mean_probability * h.predictions
                    + excluded.mean_probability * excluded.predictions)
                    / (h.predictions + excluded.predictions),
                max_probability = greatest(h.max_probability, excluded.max_probability),
                min_health_score = least(h.min_health_score, excluded.min_health_score),
                worst_severity = (array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'])[greatest(
                    array_position(array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'], h.worst_severity),
                    array_position(array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'],
                                   excluded.worst_severity))],
                last_ts = greatest(h.last_ts, excluded.last_ts),
                model_version = case when excluded.last_ts > h.last_ts
                    then excluded.model_version else h.model_version end
            $q$, part.part_schema, part.part_name) using p_keep_after;
        -- Alerts keep their message and severity; their link to a detailed prediction goes.
        update ops.alerts set prediction_id = null, prediction_ts = null
        where prediction_ts >= month_start and prediction_ts < month_start + interval '1 month';
        -- An empty partition of the same month takes its place (a late prediction of that
        -- month is rolled up at the next run): the space returns to the file system at once.
        execute format('alter table ops.predictions detach partition %I.%I',
                       part.part_schema, part.part_name);
        execute format('drop table %I.%I', part.part_schema, part.part_name);
        perform ops.ensure_month_partitions('ops.predictions'::regclass, month_start,
                                            month_start + interval '1 month' - interval '1 day');
        insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
        values ('emps-retention', 'system', 'predictions.roll_up', 'partition',
                part.part_schema || '.' || part.part_name,
                jsonb_build_object('predictions', n, 'before', p_before));
        partition_name := part.part_schema || '.' || part.part_name;
        rolled_up := n;
        return next;
    end loop;
    delete from ops.predictions_hourly where hour < p_keep_after;
end
$$;

revoke all on function ops.take_for_archive(text, timestamptz, integer) from public;
revoke all on function ops.roll_up_predictions(timestamptz, timestamptz) from public;
grant execute on function ops.take_for_archive(text, timestamptz, integer) to emps_alerting;
grant execute on function ops.roll_up_predictions(timestamptz, timestamptz) to emps_alerting;
