-- Sign-in, sessions and tokens.
--
-- Passwords are checked here and nowhere else, and no function returns what is stored. The
-- embedded PostgreSQL has no pgcrypto, so bcrypt itself runs in the client: it asks
-- ops.sign_in_salt for the user's bcrypt salt (a stable made-up one for an unknown name), hashes
-- the typed password with it, and ops.sign_in compares the SHA-256 of that bcrypt string with the
-- stored verifier. What is stored (salt + SHA-256 of the bcrypt string) cannot sign anyone in:
-- that takes the bcrypt string, which takes the password.
--
-- A sign-in mints a token; the client keeps the token and the database only its SHA-256. Every
-- operator function takes the token and re-reads the user's role and active flag on each call.
-- Dashboard sessions end when unused for their idle limit and at their absolute expiry; API
-- tokens (`emps user token`, the HTTP API) only at their expiry. Both can be revoked.
--
-- More than 10 failed checks in a minute for one user name, or from one client, and both steps
-- refuse at once, before any bcrypt work is asked of anyone.

alter table ops.users add column if not exists password_salt text;
alter table ops.users add column if not exists password_verifier bytea;
alter table ops.users add column if not exists must_change_password boolean not null default false;
alter table ops.users add column if not exists password_changed_at timestamptz;
update ops.users
set password_salt = left(password_hash, 29),
    password_verifier = sha256(convert_to(password_hash, 'UTF8'))
where password_verifier is null;
alter table ops.users alter column password_salt set not null;
alter table ops.users alter column password_verifier set not null;
alter table ops.users add constraint users_password_salt_check
    check (password_salt ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{22}$');
alter table ops.users add constraint users_password_verifier_check
    check (octet_length(password_verifier) = 32);
alter table ops.users drop column password_hash;
grant select (must_change_password, password_changed_at) on ops.users to emps_reader;

create table if not exists ops.auth_tokens (
    id bigserial primary key,
    user_id bigint not null references ops.users (id) on delete cascade,
    token_sha256 bytea not null unique check (octet_length(token_sha256) = 32),
    kind text not null check (kind in ('session', 'api')),
    label text not null default '',
    client text not null default '',
    created_at timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    idle_timeout interval,
    expires_at timestamptz not null,
    revoked_at timestamptz,
    revoked_reason text
);
create index if not exists auth_tokens_user_idx on ops.auth_tokens (user_id) where revoked_at is null;

create table if not exists ops.sign_in_attempts (
    id bigserial primary key,
    at timestamptz not null default now(),
    username text not null,
    client text not null,
    succeeded boolean not null
);
create index if not exists sign_in_attempts_user_idx
    on ops.sign_in_attempts (username, at) where not succeeded;
create index if not exists sign_in_attempts_client_idx
    on ops.sign_in_attempts (client, at) where not succeeded;
create index if not exists sign_in_attempts_at_idx on ops.sign_in_attempts (at);

-- A random key for made-up salts of unknown user names (the same name always gets the same one).
create table if not exists ops.auth_key (
    id boolean primary key default true check (id),
    salt_key bytea not null
);
insert into ops.auth_key (salt_key)
values (sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')))
on conflict (id) do nothing;

revoke all on ops.auth_tokens, ops.sign_in_attempts, ops.auth_key from public, emps_reader,
    emps_writer, emps_operator, emps_ingest, emps_scoring, emps_alerting;
revoke all on sequence ops.auth_tokens_id_seq, ops.sign_in_attempts_id_seq from public;

-- The functions that took a user name (anyone could act as anyone) or returned hashes.
drop function if exists ops.user_credentials(text);
drop function if exists ops.record_sign_in(text, boolean);
drop function if exists ops.user_acknowledge_alert(text, bigint, text);
drop function if exists ops.user_resolve_alert(text, bigint, text);
drop function if exists ops.user_create_maintenance_task(
    text, text, text, integer, timestamptz, bigint, text);
drop function if exists ops.user_reschedule_maintenance_task(text, bigint, timestamptz, text);
drop function if exists ops.user_complete_maintenance_task(text, bigint, text, text);
drop function if exists ops.admin_save_user(text, text, text, text, text, boolean);
drop function if exists ops.admin_set_threshold(text, text, double precision);
drop function if exists ops.user_role_for(text, text[]);

create or replace function ops.sign_in_throttled(p_username text, p_client text)
returns boolean
language sql stable security definer set search_path = pg_catalog, pg_temp
as $$
    select (select count(*) from ops.sign_in_attempts
            where username = lower(p_username) and not succeeded
              and at > now() - interval '1 minute') >= 10
        or (select count(*) from ops.sign_in_attempts
            where client = coalesce(p_client, '') and not succeeded
              and at > now() - interval '1 minute') >= 10;
$$;

create or replace function ops.refuse_if_throttled(p_username text, p_client text)
returns void
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if ops.sign_in_throttled(p_username, p_client) then
        raise exception 'too many wrong passwords for this user or from this address in the last '
            'minute; wait a minute and try again' using errcode = 'configuration_limit_exceeded';
    end if;
end
$$;

-- The bcrypt salt to hash a typed password with (made up, but stable, for an unknown name).
create or replace function ops.sign_in_salt(p_username text, p_client text)
returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_salt text;
begin
    perform ops.refuse_if_throttled(p_username, p_client);
    select password_salt into v_salt from ops.users where username = lower(p_username);
    if v_salt is null then
        -- 21 characters of bcrypt's base64, then one of the four that end a canonical salt.
        select '$2b$12$' || translate(left(encode(d, 'base64'), 21),
                   'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
                   './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789')
               || substr('.Oeu', get_byte(d, 31) % 4 + 1, 1)
        into v_salt
        from (select sha256(k.salt_key || convert_to(lower(p_username), 'UTF8')) as d
              from ops.auth_key k) digest;
    end if;
    return v_salt;
end
$$;

-- Check a password (as its bcrypt string) and open a session: one row when it matches an active
-- user, none when not. Every check is counted; every check of a known user is audited.
create or replace function ops.sign_in(
    p_username text, p_bcrypt text, p_client text, p_token_sha256 bytea,
    p_idle_s integer, p_max_s integer
) returns table (username text, role text, display_name text, must_change_password boolean)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_user ops.users;
    v_ok boolean;
begin
    perform ops.refuse_if_throttled(p_username, p_client);
    if octet_length(p_token_sha256) is distinct from 32 then
        raise exception 'a session token hash is 32 bytes' using errcode = 'check_violation';
    end if;
    if p_idle_s not between 5 and 7 * 86400 or p_max_s not between 60 and 30 * 86400 then
        raise exception 'session limits out of range: idle % s, max % s', p_idle_s, p_max_s
            using errcode = 'check_violation';
    end if;
    select * into v_user from ops.users u where u.username = lower(p_username);
    v_ok := v_user.id is not null and v_user.active
        and v_user.password_verifier = sha256(convert_to(coalesce(p_bcrypt, ''), 'UTF8'));
    insert into ops.sign_in_attempts (username, client, succeeded)
    values (lower(p_username), coalesce(p_client, ''), v_ok);
    if v_user.id is not null then
        insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
        values (v_user.username, v_user.role,
                case when v_ok then 'user.sign_in' else 'user.sign_in_failed' end,
                'user', v_user.username, jsonb_build_object('client', coalesce(p_client, '')));
    end if;
    if not v_ok then
        return;
    end if;
    delete from ops.sign_in_attempts a where a.at < now() - interval '1 day';
    update ops.users u set last_sign_in_at = now() where u.id = v_user.id;
    insert into ops.auth_tokens (user_id, token_sha256, kind, client, idle_timeout, expires_at)
    values (v_user.id, p_token_sha256, 'session', coalesce(p_client, ''),
            make_interval(secs => p_idle_s), now() + make_interval(secs => p_max_s));
    return query select v_user.username, v_user.role, v_user.display_name,
                        v_user.must_change_password;
end
$$;

-- Who a token belongs to now (role and active flag read afresh), or no row when it is unknown,
-- revoked, expired or idle too long, or its user is deactivated. Each use counts as activity.
create or replace function ops.token_user(p_token text)
returns table (username text, role text, display_name text, must_change_password boolean,
               kind text, expires_at timestamptz)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_token ops.auth_tokens;
begin
    select t.* into v_token from ops.auth_tokens t
    where t.token_sha256 = sha256(convert_to(coalesce(p_token, ''), 'UTF8'))
      and t.revoked_at is null and t.expires_at > now()
      and (t.idle_timeout is null or t.last_used_at + t.idle_timeout > now());
    if v_token.id is null then
        return;
    end if;
    update ops.auth_tokens t set last_used_at = now() where t.id = v_token.id;
    return query
        select u.username, u.role, u.display_name, u.must_change_password, v_token.kind,
               v_token.expires_at
        from ops.users u where u.id = v_token.user_id and u.active;
end
$$;

-- The acting user of an operator call, or an error saying why not.
create or replace function ops.session_actor(p_token text, p_allowed text[])
returns table (username text, role text)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
begin
    select * into v from ops.token_user(p_token);
    if v.username is null then
        raise exception 'your session has ended (signed out, idle too long, expired or revoked); '
            'sign in again' using errcode = 'insufficient_privilege';
    end if;
    if v.must_change_password then
        raise exception 'user % must choose a new password before doing anything else', v.username
            using errcode = 'insufficient_privilege';
    end if;
    if not v.role = any (p_allowed) then
        raise exception 'user % is a %, and only % may do this', v.username, v.role,
            array_to_string(p_allowed, ' or ') using errcode = 'insufficient_privilege';
    end if;
    return query select v.username, v.role;
end
$$;

create or replace function ops.sign_out(p_token text)
returns void
language sql security definer set search_path = pg_catalog, pg_temp
as $$
    update ops.auth_tokens set revoked_at = now(), revoked_reason = 'signed out'
    where token_sha256 = sha256(convert_to(coalesce(p_token, ''), 'UTF8')) and revoked_at is null;
$$;

create or replace function ops.valid_bcrypt(p_bcrypt text)
returns boolean
language sql immutable set search_path = pg_catalog, pg_temp
as $$
    select coalesce(p_bcrypt ~ '^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$', false);
$$;

-- A signed-in user changes their own password: the current one is checked (and counted like a
-- sign-in: false when wrong), their other sessions end, the forced change at first sign-in is done.
create or replace function ops.change_password(
    p_token text, p_old_bcrypt text, p_new_bcrypt text, p_client text
) returns boolean
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_user ops.users;
    v_token_id bigint;
begin
    select u.* into v_user from ops.token_user(p_token) s join ops.users u using (username);
    if v_user.id is null then
        raise exception 'your session has ended; sign in again' using errcode = 'insufficient_privilege';
    end if;
    perform ops.refuse_if_throttled(v_user.username, p_client);
    if v_user.password_verifier <> sha256(convert_to(coalesce(p_old_bcrypt, ''), 'UTF8')) then
        insert into ops.sign_in_attempts (username, client, succeeded)
        values (v_user.username, coalesce(p_client, ''), false);
        insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
        values (v_user.username, v_user.role, 'user.password_change_failed', 'user',
                v_user.username, '{}');
        return false;
    end if;
    if not ops.valid_bcrypt(p_new_bcrypt) then
        raise exception 'the new password must arrive as a bcrypt string' using errcode = 'check_violation';
    end if;
    update ops.users
    set password_salt = left(p_new_bcrypt, 29),
        password_verifier = sha256(convert_to(p_new_bcrypt, 'UTF8')),
        must_change_password = false, password_changed_at = now(), updated_at = now()
    where id = v_user.id;
    select t.id into v_token_id from ops.auth_tokens t
    where t.token_sha256 = sha256(convert_to(p_token, 'UTF8'));
    update ops.auth_tokens
    set revoked_at = now(), revoked_reason = 'password changed'
    where user_id = v_user.id and kind = 'session' and revoked_at is null and id <> v_token_id;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (v_user.username, v_user.role, 'user.password', 'user', v_user.username, '{}');
    return true;
end
$$;

-- The dashboard's actions, as the session's user (role checked now, audit stamped with it).
create or replace function ops.user_acknowledge_alert(
    p_token text, p_alert_id bigint, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.alerts;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.acknowledge_alert(p_alert_id, v.username, p_note);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

create or replace function ops.user_resolve_alert(
    p_token text, p_alert_id bigint, p_note text default null
) returns ops.alerts
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.alerts;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.resolve_alert(p_alert_id, v.username, p_note);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

create or replace function ops.user_create_maintenance_task(
    p_token text, p_equipment_id text, p_task_type text, p_priority integer,
    p_scheduled_date timestamptz, p_alert_id bigint default null, p_notes text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.maintenance_tasks;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.create_maintenance_task(p_equipment_id, p_task_type, p_priority,
                                          p_scheduled_date, v.username, p_alert_id, p_notes);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

create or replace function ops.user_reschedule_maintenance_task(
    p_token text, p_task_id bigint, p_scheduled_date timestamptz, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.maintenance_tasks;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.reschedule_maintenance_task(p_task_id, p_scheduled_date, v.username, p_note);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

create or replace function ops.user_complete_maintenance_task(
    p_token text, p_task_id bigint, p_outcome text, p_note text default null
) returns ops.maintenance_tasks
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    result ops.maintenance_tasks;
begin
    select * into v from ops.session_actor(p_token, array['Admin', 'Technician']);
    result := ops.complete_maintenance_task(p_task_id, p_outcome, v.username, p_note);
    perform ops.stamp_audit_role(v.role);
    return result;
end
$$;

-- Admin: add or change a user. A password set for someone else is temporary (they choose their
-- own at their next sign-in) and ends their sessions; deactivating a user ends all their tokens.
create or replace function ops.admin_save_user(
    p_token text, p_username text, p_role text, p_display_name text, p_password_bcrypt text,
    p_active boolean default true
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    v_target ops.users;
    v_name text := lower(trim(p_username));
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    if v_name = v.username and (p_role <> 'Admin' or not p_active) then
        raise exception 'admin % cannot demote or deactivate themself; ask another admin', v.username
            using errcode = 'check_violation';
    end if;
    if p_password_bcrypt is not null and not ops.valid_bcrypt(p_password_bcrypt) then
        raise exception 'the password must arrive as a bcrypt string' using errcode = 'check_violation';
    end if;
    select * into v_target from ops.users where username = v_name for update;
    if v_target.id is not null then
        update ops.users
        set role = p_role, display_name = coalesce(p_display_name, display_name),
            password_salt = coalesce(left(p_password_bcrypt, 29), password_salt),
            password_verifier = coalesce(sha256(convert_to(p_password_bcrypt, 'UTF8')),
                                         password_verifier),
            must_change_password = case when p_password_bcrypt is null then must_change_password
                                        else v_name <> v.username end,
            password_changed_at = case when p_password_bcrypt is null then password_changed_at
                                       else now() end,
            active = p_active, updated_at = now()
        where id = v_target.id;
        update ops.auth_tokens
        set revoked_at = now(),
            revoked_reason = case when not p_active then 'user deactivated'
                                  else 'password reset by an admin' end
        where user_id = v_target.id and revoked_at is null
          and (not p_active or (p_password_bcrypt is not null and v_name <> v.username
                                and kind = 'session'));
    else
        if p_password_bcrypt is null then
            raise exception 'new user % needs a password', v_name using errcode = 'check_violation';
        end if;
        insert into ops.users (username, role, display_name, password_salt, password_verifier,
                               must_change_password, password_changed_at, active)
        values (v_name, p_role, coalesce(p_display_name, ''), left(p_password_bcrypt, 29),
                sha256(convert_to(p_password_bcrypt, 'UTF8')), true, now(), p_active);
    end if;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (v.username, v.role, case when v_target.id is not null then 'user.update' else 'user.create' end,
            'user', v_name,
            jsonb_build_object('role', p_role, 'active', p_active,
                               'password_changed', p_password_bcrypt is not null));
end
$$;

-- Admin: end every session and token of a user (a lost laptop, a leaked script token).
create or replace function ops.admin_revoke_tokens(p_token text, p_username text)
returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    n integer;
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    update ops.auth_tokens t set revoked_at = now(), revoked_reason = 'revoked by ' || v.username
    from ops.users u
    where u.id = t.user_id and u.username = lower(p_username) and t.revoked_at is null
      and t.token_sha256 <> sha256(convert_to(p_token, 'UTF8'));
    get diagnostics n = row_count;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (v.username, v.role, 'user.revoke_tokens', 'user', lower(p_username),
            jsonb_build_object('revoked', n));
    return n;
end
$$;

create or replace function ops.admin_set_threshold(p_token text, p_key text, p_value double precision)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
    v_old double precision;
    v_medium double precision;
    v_high double precision;
    v_critical double precision;
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    select value into v_old from ops.thresholds where key = p_key for update;
    if v_old is null then
        raise exception 'threshold % does not exist', p_key using errcode = 'no_data_found';
    end if;
    update ops.thresholds set value = p_value, updated_at = now(), updated_by = v.username
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
    values (v.username, v.role, 'threshold.update', 'threshold', p_key,
            jsonb_build_object('from', v_old, 'to', p_value));
end
$$;

-- The owner's (the CLI on the server): a token for scripts and, later, the HTTP API.
create or replace function ops.mint_api_token(
    p_username text, p_token_sha256 bytea, p_label text, p_days integer, p_actor text
) returns table (token_id bigint, expires_at timestamptz)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_user ops.users;
begin
    if octet_length(p_token_sha256) is distinct from 32 then
        raise exception 'a token hash is 32 bytes' using errcode = 'check_violation';
    end if;
    if p_days not between 1 and 3650 then
        raise exception 'a token lasts 1 to 3650 days, not %', p_days using errcode = 'check_violation';
    end if;
    select * into v_user from ops.users where username = lower(p_username) and active;
    if v_user.id is null then
        raise exception 'user % is unknown or deactivated', p_username using errcode = 'no_data_found';
    end if;
    insert into ops.auth_tokens as t (user_id, token_sha256, kind, label, client, expires_at)
    values (v_user.id, p_token_sha256, 'api', coalesce(p_label, ''), 'cli',
            now() + make_interval(days => p_days))
    returning t.id, t.expires_at into token_id, expires_at;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_actor, 'system', 'user.token', 'user', v_user.username,
            jsonb_build_object('token_id', token_id, 'label', p_label, 'days', p_days));
    return next;
end
$$;

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'ops.sign_in_throttled(text, text)',
        'ops.refuse_if_throttled(text, text)',
        'ops.sign_in_salt(text, text)',
        'ops.sign_in(text, text, text, bytea, integer, integer)',
        'ops.token_user(text)',
        'ops.session_actor(text, text[])',
        'ops.sign_out(text)',
        'ops.valid_bcrypt(text)',
        'ops.change_password(text, text, text, text)',
        'ops.user_acknowledge_alert(text, bigint, text)',
        'ops.user_resolve_alert(text, bigint, text)',
        'ops.user_create_maintenance_task(text, text, text, integer, timestamptz, bigint, text)',
        'ops.user_reschedule_maintenance_task(text, bigint, timestamptz, text)',
        'ops.user_complete_maintenance_task(text, bigint, text, text)',
        'ops.admin_save_user(text, text, text, text, text, boolean)',
        'ops.admin_revoke_tokens(text, text)',
        'ops.admin_set_threshold(text, text, double precision)',
        'ops.mint_api_token(text, bytea, text, integer, text)'
    ] loop
        execute format('revoke all on function %s from public', fn);
    end loop;
    foreach fn in array array[
        'ops.sign_in_salt(text, text)',
        'ops.sign_in(text, text, text, bytea, integer, integer)',
        'ops.token_user(text)',
        'ops.sign_out(text)',
        'ops.change_password(text, text, text, text)',
        'ops.user_acknowledge_alert(text, bigint, text)',
        'ops.user_resolve_alert(text, bigint, text)',
        'ops.user_create_maintenance_task(text, text, text, integer, timestamptz, bigint, text)',
        'ops.user_reschedule_maintenance_task(text, bigint, timestamptz, text)',
        'ops.user_complete_maintenance_task(text, bigint, text, text)',
        'ops.admin_save_user(text, text, text, text, text, boolean)',
        'ops.admin_revoke_tokens(text, text)',
        'ops.admin_set_threshold(text, text, double precision)'
    ] loop
        execute format('grant execute on function %s to emps_operator', fn);
    end loop;
end
$$;
