-- Dashboard: its users, editable thresholds, and the narrow role its writes go through.
--
-- emps_operator can do nothing but EXECUTE the functions below. Each one looks the acting user up
-- in ops.users and refuses when that user's role may not do the action, so a bug in the app cannot
-- let a Viewer acknowledge an alert; the lifecycle functions of 0004 then write ops.audit_log and
-- these wrappers stamp the user's role on that audit row.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'emps_operator') then
        create role emps_operator login;
    end if;
end
$$;
grant usage on schema ops to emps_operator;

create table if not exists ops.users (
    id bigserial primary key,
    username text not null unique check (username ~ '^[a-z0-9][a-z0-9_.@-]{1,63}$'),
    display_name text not null default '',
    role text not null check (role in ('Admin', 'Technician', 'Viewer')),
    password_hash text not null,
    active boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    last_sign_in_at timestamptz
);
-- The read-only role sees who the users are, never their password hashes.
revoke all on ops.users from emps_reader;
grant select (id, username, display_name, role, active, created_at, updated_at, last_sign_in_at)
    on ops.users to emps_reader;
revoke all on ops.users from emps_writer;

create table if not exists ops.thresholds (
    key text primary key,
    value double precision not null,
    description text not null,
    updated_at timestamptz not null default now(),
    updated_by text not null default 'migration'
);
insert into ops.thresholds (key, value, description) values
    ('severity_medium', 0.30, 'Failure probability from which a prediction is MEDIUM'),
    ('severity_high', 0.60, 'Failure probability from which a prediction is HIGH'),
    ('severity_critical', 0.85, 'Failure probability from which a prediction is CRITICAL'),
    ('silent_minutes', 15, 'Minutes without a reading after which equipment counts as silent')
on conflict (key) do nothing;

-- The role of an active user, or an error naming what is wrong.
create or replace function ops.user_role_for(p_username text, p_allowed text[])
returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text;
begin
    select role into v_role from ops.users where username = p_username and active;
    if v_role is null then
        raise exception 'user % is unknown or deactivated', p_username
            using errcode = 'insufficient_privilege';
    end if;
    if not v_role = any (p_allowed) then
        raise exception 'user % is a %, and only % may do this', p_username, v_role,
            array_to_string(p_allowed, ' or ') using errcode = 'insufficient_privilege';
    end if;
    return v_role;
end
$$;

-- Stamp the role on the audit row the lifecycle function just wrote in this transaction.
create or replace function ops.stamp_audit_role(p_role text)
returns void
language sql security definer set search_path = pg_catalog, pg_temp
as $$
    update ops.audit_log set actor_role = p_role
    where id = currval(pg_get_serial_sequence('ops.audit_log', 'id'));
$$;

create or replace function ops.user_acknowledge_alert(
    p_username text, p_alert_id bigint, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_username, array['Admin', 'Technician']);
    result ops.alerts;
begin
    result := ops.acknowledge_alert(p_alert_id, p_username, p_note);
    perform ops.stamp_audit_role(v_role);
    return result;
end
$$;

create or replace function ops.user_resolve_alert(
    p_username text, p_alert_id bigint, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_username, array['Admin', 'Technician']);
    result ops.alerts;
begin
    result := ops.resolve_alert(p_alert_id, p_username, p_note);
    perform ops.stamp_audit_role(v_role);
    return result;
end
$$;

create or replace function ops.user_create_maintenance_task(
    p_username text, p_equipment_id text, p_task_type text, p_priority integer,
    p_scheduled_date timestamptz, p_alert_id bigint default null, p_notes text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_username, array['Admin', 'Technician']);
    result ops.maintenance_tasks;
begin
    result := ops.create_maintenance_task(p_equipment_id, p_task_type, p_priority,
                                          p_scheduled_date, p_username, p_alert_id, p_notes);
    perform ops.stamp_audit_role(v_role);
    return result;
end
$$;

create or replace function ops.user_reschedule_maintenance_task(
    p_username text, p_task_id bigint, p_scheduled_date timestamptz, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_username, array['Admin', 'Technician']);
    result ops.maintenance_tasks;
begin
    result := ops.reschedule_maintenance_task(p_task_id, p_scheduled_date, p_username, p_note);
    perform ops.stamp_audit_role(v_role);
    return result;
end
$$;

create or replace function ops.user_complete_maintenance_task(
    p_username text, p_task_id bigint, p_outcome text, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_username, array['Admin', 'Technician']);
    result ops.maintenance_tasks;
begin
    result := ops.complete_maintenance_task(p_task_id, p_outcome, p_username, p_note);
    perform ops.stamp_audit_role(v_role);
    return result;
end
$$;

-- Sign-in: the hash is checked in the app (bcrypt); only the operator role can fetch it.
create or replace function ops.user_credentials(p_username text)
returns table (username text, role text, display_name text, password_hash text, active boolean)
language sql stable security definer set search_path = pg_catalog, pg_temp
as $$
    select u.username, u.role, u.display_name, u.password_hash, u.active
    from ops.users u where u.username = p_username;
$$;

create or replace function ops.record_sign_in(p_username text, p_succeeded boolean)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text;
begin
    select role into v_role from ops.users where username = p_username;
    if p_succeeded then
        update ops.users set last_sign_in_at = now() where username = p_username;
    end if;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_username, v_role, case when p_succeeded then 'user.sign_in' else 'user.sign_in_failed' end,
            'user', p_username, '{}');
end
$$;

-- Admin-only: add or change a user (the app hashes the password; null keeps the old one).
create or replace function ops.admin_save_user(
    p_admin text, p_username text, p_role text, p_display_name text, p_password_hash text,
    p_active boolean default true
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_admin, array['Admin']);
    v_existed boolean;
begin
    if p_username = p_admin and (p_role <> 'Admin' or not p_active) then
        raise exception 'admin % cannot demote or deactivate themself; ask another admin', p_admin
            using errcode = 'check_violation';
    end if;
    select true into v_existed from ops.users where username = p_username;
    if v_existed then
        update ops.users
        set role = p_role, display_name = coalesce(p_display_name, display_name),
            password_hash = coalesce(p_password_hash, password_hash), active = p_active,
            updated_at = now()
        where username = p_username;
    else
        if p_password_hash is null then
            raise exception 'new user % needs a password', p_username using errcode = 'check_violation';
        end if;
        insert into ops.users (username, role, display_name, password_hash, active)
        values (p_username, p_role, coalesce(p_display_name, ''), p_password_hash, p_active);
    end if;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_admin, v_role, case when v_existed then 'user.update' else 'user.create' end,
            'user', p_username,
            jsonb_build_object('role', p_role, 'active', p_active,
                               'password_changed', p_password_hash is not null));
end
$$;

create or replace function ops.admin_set_threshold(p_admin text, p_key text, p_value double precision)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_admin, array['Admin']);
    v_old double precision;
    v_medium double precision;
    v_high double precision;
    v_critical double precision;
begin
    select value into v_old from ops.thresholds where key = p_key for update;
    if v_old is null then
        raise exception 'threshold % does not exist', p_key using errcode = 'no_data_found';
    end if;
    update ops.thresholds set value = p_value, updated_at = now(), updated_by = p_admin
    where key = p_key;
    select max(value) filter (where key = 'severity_medium'),
           max(value) filter (where key = 'severity_high'),
           max(value) filter (where key = 'severity_critical')
    into v_medium, v_high, v_critical from ops.thresholds;
    if not (0 < v_medium and v_medium < v_high and v_high < v_critical and v_critical <= 1) then
        raise exception 'severity thresholds must rise: 0 < medium (%) < high (%) < critical (%) <= 1',
            v_medium, v_high, v_critical using errcode = 'check_violation';
    end if;
    if p_key = 'silent_minutes' and p_value < 1 then
        raise exception 'silent_minutes must be at least 1 minute' using errcode = 'check_violation';
    end if;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_admin, v_role, 'threshold.update', 'threshold', p_key,
            jsonb_build_object('from', v_old, 'to', p_value));
end
$$;

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'ops.user_role_for(text, text[])',
        'ops.stamp_audit_role(text)',
        'ops.user_acknowledge_alert(text, bigint, text)',
        'ops.user_resolve_alert(text, bigint, text)',
        'ops.user_create_maintenance_task(text, text, text, integer, timestamptz, bigint, text)',
        'ops.user_reschedule_maintenance_task(text, bigint, timestamptz, text)',
        'ops.user_complete_maintenance_task(text, bigint, text, text)',
        'ops.user_credentials(text)',
        'ops.record_sign_in(text, boolean)',
        'ops.admin_save_user(text, text, text, text, text, boolean)',
        'ops.admin_set_threshold(text, text, double precision)'
    ] loop
        execute format('revoke all on function %s from public', fn);
    end loop;
    foreach fn in array array[
        'ops.user_acknowledge_alert(text, bigint, text)',
        'ops.user_resolve_alert(text, bigint, text)',
        'ops.user_create_maintenance_task(text, text, text, integer, timestamptz, bigint, text)',
        'ops.user_reschedule_maintenance_task(text, bigint, timestamptz, text)',
        'ops.user_complete_maintenance_task(text, bigint, text, text)',
        'ops.user_credentials(text)',
        'ops.record_sign_in(text, boolean)',
        'ops.admin_save_user(text, text, text, text, text, boolean)',
        'ops.admin_set_threshold(text, text, double precision)'
    ] loop
        execute format('grant execute on function %s to emps_operator', fn);
    end loop;
end
$$;
