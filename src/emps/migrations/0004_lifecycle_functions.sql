-- Alert and maintenance-task lifecycle. Every state change people make goes through one of these
-- functions: they check the transition, stamp who and when, and write ops.audit_log in the same
-- transaction. SECURITY DEFINER so a narrow role can be given EXECUTE and nothing else.

create or replace function ops.acknowledge_alert(
    p_alert_id bigint, p_actor text, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.alerts;
begin
    if coalesce(trim(p_actor), '') = '' then
        raise exception 'acknowledging alert %: who acknowledges it must be given', p_alert_id;
    end if;
    select * into result from ops.alerts where id = p_alert_id for update;
    if not found then
        raise exception 'alert % does not exist', p_alert_id using errcode = 'no_data_found';
    end if;
    if result.status <> 'open' then
        raise exception 'alert % is already %; only an open alert can be acknowledged',
            p_alert_id, result.status using errcode = 'check_violation';
    end if;
    update ops.alerts
    set status = 'acknowledged', acknowledged_at = now(), acknowledged_by = p_actor,
        resolution_note = coalesce(p_note, resolution_note), updated_at = now()
    where id = p_alert_id
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'alert.acknowledge', 'alert', p_alert_id::text,
            jsonb_build_object('note', p_note, 'equipment_id', result.equipment_id,
                               'minutes_to_acknowledge',
                               round(extract(epoch from result.acknowledged_at - result.created_at) / 60, 1)));
    return result;
end
$$;

create or replace function ops.resolve_alert(
    p_alert_id bigint, p_actor text, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.alerts;
begin
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

create or replace function ops.reschedule_maintenance_task(
    p_task_id bigint, p_scheduled_date timestamptz, p_actor text, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.maintenance_tasks;
    previous timestamptz;
begin
    select * into result from ops.maintenance_tasks where id = p_task_id for update;
    if not found then
        raise exception 'maintenance task % does not exist', p_task_id using errcode = 'no_data_found';
    end if;
    if result.status in ('completed', 'cancelled') then
        raise exception 'maintenance task % is % and cannot be rescheduled', p_task_id, result.status
            using errcode = 'check_violation';
    end if;
    previous := result.scheduled_date;
    update ops.maintenance_tasks
    set scheduled_date = p_scheduled_date, updated_at = now(),
        notes = case when p_note is null then notes else concat_ws(E'\n', notes, p_note) end
    where id = p_task_id
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'task.reschedule', 'maintenance_task', p_task_id::text,
            jsonb_build_object('from', previous, 'to', p_scheduled_date, 'note', p_note));
    return result;
end
$$;

create or replace function ops.complete_maintenance_task(
    p_task_id bigint, p_outcome text, p_actor text, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.maintenance_tasks;
begin
    if p_outcome not in ('fault_found', 'no_fault_found', 'failed_before_service') then
        raise exception 'outcome % is not one of fault_found, no_fault_found, failed_before_service',
            p_outcome using errcode = 'check_violation';
    end if;
    select * into result from ops.maintenance_tasks where id = p_task_id for update;
    if not found then
        raise exception 'maintenance task % does not exist', p_task_id using errcode = 'no_data_found';
    end if;
    if result.status in ('completed', 'cancelled') then
        raise exception 'maintenance task % is already %', p_task_id, result.status
            using errcode = 'check_violation';
    end if;
    update ops.maintenance_tasks
    set status = 'completed', completed_date = now(), outcome = p_outcome, updated_at = now(),
        notes = case when p_note is null then notes else concat_ws(E'\n', notes, p_note) end
    where id = p_task_id
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'task.complete', 'maintenance_task', p_task_id::text,
            jsonb_build_object('outcome', p_outcome, 'note', p_note,
                               'equipment_id', result.equipment_id, 'alert_id', result.alert_id));
    return result;
end
$$;

revoke all on function ops.acknowledge_alert(bigint, text, text) from public;
revoke all on function ops.resolve_alert(bigint, text, text) from public;
revoke all on function ops.create_maintenance_task(text, text, integer, timestamptz, text, bigint, text)
    from public;
revoke all on function ops.reschedule_maintenance_task(bigint, timestamptz, text, text) from public;
revoke all on function ops.complete_maintenance_task(bigint, text, text, text) from public;
grant execute on function ops.acknowledge_alert(bigint, text, text) to emps_writer;
grant execute on function ops.resolve_alert(bigint, text, text) to emps_writer;
grant execute on function ops.create_maintenance_task(text, text, integer, timestamptz, text, bigint, text)
    to emps_writer;
grant execute on function ops.reschedule_maintenance_task(bigint, timestamptz, text, text)
    to emps_writer;
grant execute on function ops.complete_maintenance_task(bigint, text, text, text) to emps_writer;
