-- Least privilege: one login role per stage, each able to do what its stage does and
-- nothing else. Until now emps_writer could write every raw and ops table, rewrite the audit log
-- and the thresholds, act as anyone through the lifecycle functions and retire any table's
-- partitions.
--
--   emps_writer    dbt: reads raw and the ops tables its marts use; owns the analytics schema
--   emps_ingest    drop files, equipment registry, the simulator and fleet histories
--   emps_scoring   predictions and the model's promotion history
--   emps_alerting  alerts, maintenance tasks, the notification outbox, retention
--   emps_reader    the dashboard's reads, metrics, model inputs (no contact details, no secrets)
--   emps_operator  the dashboard's writes: functions only (migration 0101 makes them take a
--                  session token)
--
-- The audit log is append-only for all of them: rows go in through ops.record_audit or the
-- audited lifecycle functions, and only the owner may update or delete one.
do $$
declare
    r text;
begin
    foreach r in array array['emps_ingest', 'emps_scoring', 'emps_alerting'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            execute format('create role %I login', r);
        end if;
    end loop;
    -- Only the platform's roles may reach its database (PUBLIC could connect to any).
    execute format('revoke connect, temporary on database %I from public', current_database());
    execute format(
        'grant connect, temporary on database %I to emps_writer, emps_reader, emps_operator, '
        'emps_ingest, emps_scoring, emps_alerting', current_database());
end
$$;

grant usage on schema raw, ops, analytics to emps_ingest, emps_scoring, emps_alerting;

-- emps_writer keeps select where dbt reads, nothing else (and no default DML on new tables:
-- a new table is granted to the role that writes it, in its own migration).
revoke all on all tables in schema raw, ops from emps_writer;
revoke all on all sequences in schema raw, ops from emps_writer;
alter default privileges in schema raw, ops revoke all on tables from emps_writer;
alter default privileges in schema raw, ops revoke all on sequences from emps_writer;
grant select on all tables in schema raw to emps_writer;
alter default privileges in schema raw grant select on tables to emps_writer;
grant select on ops.predictions, ops.alerts, ops.maintenance_tasks, ops.thresholds to emps_writer;
revoke all on schema sim from emps_writer;
revoke all on sim.equipment_truth from emps_writer;

-- Ingest: the ledger, readings, quarantine, the registry, failures and maintenance history from
-- fleet packs and the simulator, the simulator's ground truth, month partitions ahead.
grant select, insert, update on raw.ingest_files to emps_ingest;
grant select, insert, delete on raw.sensor_readings, raw.quarantined_rows to emps_ingest;
grant select, insert, update on raw.equipment, raw.failure_events to emps_ingest;
grant select on raw.sensor_catalog, raw.equipment_type_envelopes to emps_ingest;
grant select, insert on ops.maintenance_tasks to emps_ingest;
grant usage on sequence raw.ingest_files_id_seq, raw.quarantined_rows_id_seq,
    raw.failure_events_id_seq, ops.maintenance_tasks_id_seq to emps_ingest;
grant usage on schema sim to emps_ingest;
grant select, insert, update on sim.equipment_truth to emps_ingest;

-- Scoring: predictions in, and the promotion history (with each model's artifact hash).
grant select, insert on ops.predictions, ops.model_promotions to emps_scoring;
grant select on ops.thresholds, raw.equipment to emps_scoring;
grant usage on sequence ops.predictions_id_seq, ops.model_promotions_id_seq to emps_scoring;

-- Alerting: alerts and their log, the outbox, task updates (tasks are created through
-- ops.create_maintenance_task, audited), retention.
grant select, insert, update, delete on ops.alerts, ops.alert_prediction_log to emps_alerting;
grant select, insert, update on ops.notifications to emps_alerting;
grant select, update on ops.maintenance_tasks to emps_alerting;
grant select on ops.predictions, ops.thresholds, raw.equipment to emps_alerting;
grant usage on sequence ops.alerts_id_seq, ops.notifications_id_seq to emps_alerting;

-- The dashboard's reader: no recipient addresses or phone numbers, no message bodies (which name
-- them), no delivery errors (which quote them); delivery states through a view instead.
revoke all on ops.notifications from emps_reader;
create or replace view ops.notification_deliveries with (security_barrier) as
select id, alert_id, channel, event, status, attempts, next_attempt_at, created_at, sent_at
from ops.notifications;
comment on view ops.notification_deliveries is
    'Delivery state of each notification, without its recipient, text or errors (for the reader).';
grant select on ops.notification_deliveries to emps_reader, emps_alerting;

-- Nobody but the owner changes the audit log; rows are added by the functions below.
revoke insert, update, delete, truncate on ops.audit_log
    from public, emps_writer, emps_reader, emps_operator, emps_ingest, emps_scoring, emps_alerting;
revoke all on sequence ops.audit_log_id_seq from public, emps_writer;

-- The pipeline's roles record what they do as system actors ("emps-alerts", "emps-retention",
-- ...), never as a person: only the owner (the CLI on the server) and the dashboard's
-- session-checked functions name people.
create or replace function ops.require_system_actor(p_actor text)
returns void
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if session_user::text in ('emps_writer', 'emps_ingest', 'emps_scoring', 'emps_alerting')
       and coalesce(p_actor, '') !~ '^emps-[a-z0-9-]{1,40}$' then
        raise exception '% records actions as a system actor (emps-...), not as %',
            session_user, coalesce(p_actor, 'nobody') using errcode = 'insufficient_privilege';
    end if;
end
$$;

create or replace function ops.record_audit(
    p_actor text, p_action text, p_target_type text, p_target_id text default null,
    p_details jsonb default '{}'
) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    new_id bigint;
begin
    perform ops.require_system_actor(p_actor);
    if coalesce(trim(p_action), '') = '' then
        raise exception 'an audit row needs an action' using errcode = 'check_violation';
    end if;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_actor, 'system', p_action, p_target_type, p_target_id, coalesce(p_details, '{}'))
    returning id into new_id;
    return new_id;
end
$$;

-- The two lifecycle functions the alert flows call, now refusing a person's name from them.
create or replace function ops.resolve_alert(
    p_alert_id bigint, p_actor text, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.alerts;
begin
    perform ops.require_system_actor(p_actor);
    if coalesce(trim(p_actor), '') = '' then
        raise exception 'resolving alert %: who resolves it must be given', p_alert_id;
    end if;
    select * into result from ops.alerts where id = p_alert_id for update;
    if not found then
        raise exception 'alert % does not exist', p_alert_id using errcode = 'no_data_found';
    end if;
    if result.status = 'resolved' then
        raise exception 'alert % is already resolved', p_alert_id using errcode = 'check_violation';
    end if;
    update ops.alerts
    set status = 'resolved', resolved_at = now(), resolved_by = p_actor,
        resolution_note = coalesce(p_note, resolution_note), updated_at = now()
    where id = p_alert_id
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'alert.resolve', 'alert', p_alert_id::text,
            jsonb_build_object('note', p_note, 'equipment_id', result.equipment_id));
    return result;
end
$$;

create or replace function ops.create_maintenance_task(
    p_equipment_id text,
    p_task_type text,
    p_priority integer,
    p_scheduled_date timestamptz,
    p_actor text,
    p_alert_id bigint default null,
    p_notes text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.maintenance_tasks;
begin
    perform ops.require_system_actor(p_actor);
    if not exists (select 1 from raw.equipment where equipment_id = p_equipment_id) then
        raise exception 'equipment % is not registered', p_equipment_id using errcode = 'no_data_found';
    end if;
    if p_task_type not in ('inspection', 'corrective', 'preventive', 'repair') then
        raise exception 'task type % is not one of inspection, corrective, preventive, repair',
            p_task_type using errcode = 'check_violation';
    end if;
    if p_priority not between 1 and 5 then
        raise exception 'priority % must be between 1 (most urgent) and 5', p_priority
            using errcode = 'check_violation';
    end if;
    insert into ops.maintenance_tasks
        (equipment_id, alert_id, task_type, priority, scheduled_date, notes, created_by)
    values (p_equipment_id, p_alert_id, p_task_type, p_priority, p_scheduled_date, p_notes, p_actor)
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'task.create', 'maintenance_task', result.id::text,
            jsonb_build_object('equipment_id', p_equipment_id, 'task_type', p_task_type,
                               'priority', p_priority, 'scheduled_date', p_scheduled_date,
                               'alert_id', p_alert_id, 'notes', p_notes));
    return result;
end
$$;

-- Month partitions: only of the two partitioned tables, a bounded span, and retirement only of
-- months wholly in the past.
create or replace function ops.require_partitioned_table(parent regclass)
returns void
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if parent not in ('raw.sensor_readings'::regclass, 'ops.predictions'::regclass) then
        raise exception 'month partitions are managed for raw.sensor_readings and ops.predictions '
            'only, not %', parent using errcode = 'insufficient_privilege';
    end if;
end
$$;

create or replace function ops.ensure_month_partitions(
    parent regclass, from_ts timestamptz, to_ts timestamptz
) returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    schema_name text;
    table_name text;
    month_start date := date_trunc('month', from_ts at time zone 'UTC')::date;
    month_end date;
    part_name text;
    created integer := 0;
    default_part text;
    n_moved bigint;
begin
    perform ops.require_partitioned_table(parent);
    if to_ts > now() + interval '25 months' then
        raise exception 'partitions are created at most 25 months ahead, not up to %', to_ts
            using errcode = 'check_violation';
    end if;
    if to_ts - from_ts > interval '40 years' then
        raise exception 'partitions from % to % span more than 40 years', from_ts, to_ts
            using errcode = 'check_violation';
    end if;
    select n.nspname, c.relname into schema_name, table_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = parent;
    default_part := table_name || '_default';
    while month_start <= (to_ts at time zone 'UTC')::date loop
        month_end := (month_start + interval '1 month')::date;
        part_name := format('%s_y%sm%s', table_name,
                            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        if to_regclass(format('%I.%I', schema_name, part_name)) is null then
            -- Serialise with concurrent inserts that could land in the default partition.
            execute format('lock table %I.%I in share row exclusive mode', schema_name, table_name);
            execute format('create table %I.%I (like %I.%I including defaults including constraints)',
                           schema_name, part_name, schema_name, table_name);
            execute format(
                'with moved as (delete from %I.%I where ts >= %L::timestamptz and ts < %L::timestamptz'
                ' returning *) insert into %I.%I select * from moved',
                schema_name, default_part,
                month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00',
                schema_name, part_name);
            get diagnostics n_moved = row_count;
            execute format(
                'alter table %I.%I attach partition %I.%I for values from (%L) to (%L)',
                schema_name, table_name, schema_name, part_name,
                month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00');
            created := created + 1;
        end if;
        month_start := month_end;
    end loop;
    return created;
end
$$;

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
    perform ops.require_partitioned_table(parent);
    if p_before > now() then
        raise exception 'partitions are retired only before a time in the past, not before %',
            p_before using errcode = 'check_violation';
    end if;
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
        month_start := to_date(right(part.part_name, 8), '"y"YYYY"m"MM');
        if (month_start + interval '1 month') <= (p_before at time zone 'UTC') then
            execute format('alter table %I.%I detach partition %I.%I',
                           schema_name, table_name, part.part_schema, part.part_name);
            if p_mode = 'drop' then
                execute format('drop table %I.%I', part.part_schema, part.part_name);
            end if;
            insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
            values ('emps-retention', 'system', 'partition.' || p_mode, 'partition',
                    part.part_schema || '.' || part.part_name,
                    jsonb_build_object('parent', schema_name || '.' || table_name,
                                       'before', p_before));
            return next part.part_schema || '.' || part.part_name;
        end if;
    end loop;
end
$$;

-- Who may call what: nobody by default; each stage its own functions.
revoke all on function ops.require_system_actor(text) from public;
revoke all on function ops.require_partitioned_table(regclass) from public;
revoke all on function ops.record_audit(text, text, text, text, jsonb) from public;
revoke all on function ops.ensure_month_partitions(regclass, timestamptz, timestamptz)
    from public, emps_writer;
revoke all on function ops.retire_month_partitions(regclass, timestamptz, text)
    from public, emps_writer;
revoke all on function ops.acknowledge_alert(bigint, text, text) from public, emps_writer;
revoke all on function ops.resolve_alert(bigint, text, text) from public, emps_writer;
revoke all on function ops.create_maintenance_task(
    text, text, integer, timestamptz, text, bigint, text) from public, emps_writer;
revoke all on function ops.reschedule_maintenance_task(bigint, timestamptz, text, text)
    from public, emps_writer;
revoke all on function ops.complete_maintenance_task(bigint, text, text, text)
    from public, emps_writer;

grant execute on function ops.ensure_month_partitions(regclass, timestamptz, timestamptz)
    to emps_ingest;
grant execute on function ops.record_audit(text, text, text, text, jsonb)
    to emps_ingest, emps_scoring, emps_alerting;
grant execute on function ops.retire_month_partitions(regclass, timestamptz, text)
    to emps_alerting;
grant execute on function ops.resolve_alert(bigint, text, text) to emps_alerting;
grant execute on function ops.create_maintenance_task(
    text, text, integer, timestamptz, text, bigint, text) to emps_alerting;
