-- Failures recorded by people (CLI, dashboard, API), and services completed at the time they
-- were done rather than the time they were typed in. Both become labels.

create or replace function ops.record_failure(
    p_equipment_id text, p_failed_at timestamptz, p_failure_mode text, p_actor text,
    p_note text default null, p_repaired_at timestamptz default null
) returns raw.failure_events
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result raw.failure_events;
begin
    if not exists (select 1 from raw.equipment where equipment_id = p_equipment_id) then
        raise exception 'equipment % is not in the registry', p_equipment_id
            using errcode = 'no_data_found';
    end if;
    if p_failed_at is null or p_failed_at > now() + interval '5 minutes' then
        raise exception 'a failure is recorded when it happened, not in the future (%)', p_failed_at
            using errcode = 'check_violation';
    end if;
    if p_repaired_at is not null and p_repaired_at < p_failed_at then
        raise exception 'repaired at % is before the failure at %', p_repaired_at, p_failed_at
            using errcode = 'check_violation';
    end if;
    insert into raw.failure_events
        (equipment_id, failed_at, failure_mode, source, repaired_at, notes)
    values (p_equipment_id, p_failed_at, nullif(trim(p_failure_mode), ''), 'operator',
            p_repaired_at, p_note)
    on conflict (equipment_id, failed_at) do nothing
    returning * into result;
    if result.id is null then
        raise exception 'a failure of % at % is already recorded', p_equipment_id, p_failed_at
            using errcode = 'unique_violation';
    end if;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'failure.record', 'equipment', p_equipment_id,
            jsonb_build_object('failed_at', p_failed_at, 'failure_mode', p_failure_mode,
                               'repaired_at', p_repaired_at, 'note', p_note));
    return result;
end
$$;

create or replace function ops.user_record_failure(
    p_token text, p_equipment_id text, p_failed_at timestamptz, p_failure_mode text,
    p_note text default null, p_repaired_at timestamptz default null
) returns raw.failure_events
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result raw.failure_events;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.record_failure(
        p_equipment_id, p_failed_at, p_failure_mode, v.username, p_note, p_repaired_at
    );
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

-- Completing a task at the time it was done (a service typed in later, history brought in).
create or replace function ops.complete_maintenance_task(
    p_task_id bigint, p_outcome text, p_actor text, p_note text, p_completed_at timestamptz
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    result ops.maintenance_tasks;
    completed timestamptz := coalesce(p_completed_at, now());
begin
    if p_outcome not in ('fault_found', 'no_fault_found', 'failed_before_service') then
        raise exception 'outcome % is not one of fault_found, no_fault_found, failed_before_service',
            p_outcome using errcode = 'check_violation';
    end if;
    if completed > now() + interval '5 minutes' then
        raise exception 'a task is completed when it was done, not in the future (%)', completed
            using errcode = 'check_violation';
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
    set status = 'completed', completed_date = completed, outcome = p_outcome, updated_at = now(),
        notes = case when p_note is null then notes else concat_ws(E'\n', notes, p_note) end
    where id = p_task_id
    returning * into result;
    insert into ops.audit_log (actor, action, target_type, target_id, details)
    values (p_actor, 'task.complete', 'maintenance_task', p_task_id::text,
            jsonb_build_object('outcome', p_outcome, 'note', p_note, 'completed_at', completed,
                               'equipment_id', result.equipment_id, 'alert_id', result.alert_id));
    return result;
end
$$;

create or replace function ops.complete_maintenance_task(
    p_task_id bigint, p_outcome text, p_actor text, p_note text default null
) returns ops.maintenance_tasks
language sql security definer set search_path = pg_catalog, pg_temp
as $$
    select * from ops.complete_maintenance_task(p_task_id, p_outcome, p_actor, p_note, null::timestamptz)
$$;

create or replace function ops.user_complete_maintenance_task(
    p_token text, p_task_id bigint, p_outcome text, p_note text, p_completed_at timestamptz
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.maintenance_tasks;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.complete_maintenance_task(p_task_id, p_outcome, v.username, p_note, p_completed_at);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

revoke all on function ops.record_failure(text, timestamptz, text, text, text, timestamptz) from public;
revoke all on function ops.user_record_failure(text, text, timestamptz, text, text, timestamptz)
    from public;
revoke all on function ops.complete_maintenance_task(bigint, text, text, text, timestamptz)
    from public;
revoke all on function ops.user_complete_maintenance_task(text, bigint, text, text, timestamptz)
    from public;
grant execute on function ops.user_record_failure(text, text, timestamptz, text, text, timestamptz)
    to emps_operator;
grant execute on function ops.user_complete_maintenance_task(text, bigint, text, text, timestamptz)
    to emps_operator;
