-- The HTTP API: devices that push readings, each with its own keys, bound to the
-- equipment it may report; and every ingest request the API accepted, so a client can read
-- back what became of it and an Idempotency-Key answers with the same request.
--
-- The API logs in as emps_api, which has no table privileges at all: it finds a device by key,
-- records refusals, and begins, accepts and reads back its requests through the
-- security-definer functions below. Keys are added, rotated and revoked by the owner
-- (`emps devices ...`), every change audited.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'emps_api') then
        create role emps_api login;
    end if;
    execute format('grant connect, temporary on database %I to emps_api', current_database());
end
$$;
grant usage on schema ops to emps_api;

create table if not exists ops.devices (
    device_id text primary key check (device_id ~ '^[a-z0-9][a-z0-9_.-]{0,39}$'),
    equipment_ids text[] not null default '{}',
    description text not null default '',
    created_at timestamptz not null default now(),
    created_by text not null,
    revoked_at timestamptz
);
comment on table ops.devices is
    'One row per device that pushes readings over the HTTP API, with the equipment it may report.';

create table if not exists ops.device_keys (
    id bigserial primary key,
    device_id text not null references ops.devices (device_id),
    prefix text not null unique check (prefix ~ '^[0-9a-f]{12}$'),
    key_sha256 bytea not null check (octet_length(key_sha256) = 32),
    created_at timestamptz not null default now(),
    created_by text not null,
    last_used_at timestamptz,
    revoked_at timestamptz,
    revoked_by text
);
comment on table ops.device_keys is
    'One row per API key of a device: its clear prefix (for the lookup) and the SHA-256 of the key.';
create index if not exists device_keys_live_idx on ops.device_keys (device_id)
    where revoked_at is null;

create table if not exists ops.api_ingest_requests (
    request_id uuid primary key,
    device_id text not null references ops.devices (device_id),
    idempotency_key text check (length(idempotency_key) between 1 and 200),
    body_sha256 bytea not null,
    state text not null default 'pending' check (state in ('pending', 'accepted')),
    readings integer not null check (readings > 0),
    file_name text,
    first_row integer,
    last_row integer,
    created_at timestamptz not null default now(),
    accepted_at timestamptz,
    unique (device_id, idempotency_key)
);
comment on table ops.api_ingest_requests is
    'One row per ingest request of the HTTP API: the drop file and rows its readings went to.';
create index if not exists api_ingest_requests_created_idx on ops.api_ingest_requests (created_at);

revoke all on ops.devices, ops.device_keys, ops.api_ingest_requests from public, emps_reader,
    emps_writer, emps_operator, emps_ingest, emps_scoring, emps_alerting, emps_api;
revoke all on sequence ops.device_keys_id_seq from public, emps_writer;

-- The device a key belongs to, when the key is live and its device is not revoked. The hash is
-- compared here, never returned.
create or replace function ops.api_device_for_key(p_prefix text, p_key_sha256 bytea)
returns table (device_id text, equipment_ids text[], key_id bigint)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    return query
    update ops.device_keys k set last_used_at = now()
    from ops.devices d
    where k.prefix = p_prefix and k.key_sha256 = p_key_sha256 and k.revoked_at is null
      and d.device_id = k.device_id and d.revoked_at is null
    returning d.device_id, d.equipment_ids, k.id;
end
$$;

-- A reading refused for equipment the device is not bound to (or another refusal worth an
-- audit row), recorded as the device.
create or replace function ops.api_record_refusal(
    p_device_id text, p_action text, p_details jsonb
) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    if p_action !~ '^api\.[a-z_.]{1,40}$' then
        raise exception 'an API audit action is api.<what>, not %', p_action
            using errcode = 'check_violation';
    end if;
    return ops.record_audit('device:' || p_device_id, p_action, 'device', p_device_id,
                            coalesce(p_details, '{}'));
end
$$;

-- Begin a request: a new row (state pending), or the row an earlier request with the same
-- Idempotency-Key made (`created` false).
create or replace function ops.api_begin_request(
    p_request_id uuid, p_device_id text, p_idempotency_key text, p_body_sha256 bytea,
    p_readings integer
) returns table (request_id uuid, state text, body_sha256 bytea, created boolean)
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    insert into ops.api_ingest_requests as r
        (request_id, device_id, idempotency_key, body_sha256, readings)
    values (p_request_id, p_device_id, p_idempotency_key, p_body_sha256, p_readings)
    on conflict do nothing;
    return query
    select r.request_id, r.state, r.body_sha256, r.request_id = p_request_id
    from ops.api_ingest_requests r
    where r.request_id = p_request_id
       or (p_idempotency_key is not null and r.device_id = p_device_id
           and r.idempotency_key = p_idempotency_key)
    limit 1;
end
$$;

-- The request's readings are durable in a drop file (fsynced): where they are.
create or replace function ops.api_accept_request(
    p_request_id uuid, p_file_name text, p_first_row integer, p_last_row integer
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    update ops.api_ingest_requests
    set state = 'accepted', file_name = p_file_name, first_row = p_first_row,
        last_row = p_last_row, accepted_at = now()
    where request_id = p_request_id;
end
$$;

-- What became of a device's request: its drop file's ledger row and, for its own rows, the
-- quarantined and conflicting ones with their reasons (at most 50 shown).
create or replace function ops.api_request_status(p_device_id text, p_request_id uuid)
returns table (
    request_id uuid, state text, readings integer, file_name text, created_at timestamptz,
    file_status text, file_error text, rows_quarantined bigint, rows_conflict bigint,
    problems jsonb
)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
begin
    return query
    select r.request_id, r.state, r.readings, r.file_name, r.created_at, f.status, f.error,
           coalesce(q.quarantined, 0), coalesce(q.conflicts, 0), coalesce(q.problems, '[]')
    from ops.api_ingest_requests r
    left join lateral (
        select i.id, i.status, i.error from raw.ingest_files i
        where i.file_name = r.file_name order by i.id desc limit 1
    ) f on true
    left join lateral (
        select count(*) filter (where qr.kind <> 'conflict') as quarantined,
               count(*) filter (where qr.kind = 'conflict') as conflicts,
               jsonb_agg(jsonb_build_object(
                   'row', qr.row_number - r.first_row + 1, 'equipment_id', qr.equipment_id,
                   'kind', qr.kind, 'reasons', to_jsonb(qr.reasons)) order by qr.row_number)
                   filter (where qr.rn <= 50) as problems
        from (
            select x.*, row_number() over (order by x.row_number) as rn
            from raw.quarantined_rows x
            where x.ingest_file_id = f.id and x.row_number between r.first_row and r.last_row
        ) qr
    ) q on true
    where r.request_id = p_request_id and r.device_id = p_device_id;
end
$$;

revoke all on function ops.api_device_for_key(text, bytea),
    ops.api_record_refusal(text, text, jsonb),
    ops.api_begin_request(uuid, text, text, bytea, integer),
    ops.api_accept_request(uuid, text, integer, integer),
    ops.api_request_status(text, uuid) from public;
grant execute on function ops.api_device_for_key(text, bytea),
    ops.api_record_refusal(text, text, jsonb),
    ops.api_begin_request(uuid, text, text, bytea, integer),
    ops.api_accept_request(uuid, text, integer, integer),
    ops.api_request_status(text, uuid) to emps_api;
