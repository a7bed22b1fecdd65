-- HTTP ingest at a thousand requests a second: a request without an Idempotency-Key needs no
-- row before its readings are on disk, so the requests one fsync covered are recorded in one
-- statement (ops.api_accept_requests) instead of two per request. Requests leave with their
-- drop file's ledger row (ops.prune_api_requests, run by retention beside the ledger's prune),
-- so a request whose status can still be read always finds its file's outcome.

create or replace function ops.api_accept_requests(
    p_request_ids uuid[], p_device_ids text[], p_body_sha256s bytea[], p_readings integer[],
    p_file_names text[], p_first_rows integer[], p_last_rows integer[]
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
begin
    insert into ops.api_ingest_requests (
        request_id, device_id, body_sha256, readings, state, file_name, first_row, last_row,
        accepted_at)
    select r.request_id, r.device_id, r.body_sha256, r.readings, 'accepted', r.file_name,
           r.first_row, r.last_row, now()
    from unnest(p_request_ids, p_device_ids, p_body_sha256s, p_readings, p_file_names,
                p_first_rows, p_last_rows)
        as r (request_id, device_id, body_sha256, readings, file_name, first_row, last_row)
    on conflict (request_id) do nothing;
end
$$;

revoke all on function ops.api_accept_requests(
    uuid[], text[], bytea[], integer[], text[], integer[], integer[]) from public;
grant execute on function ops.api_accept_requests(
    uuid[], text[], bytea[], integer[], text[], integer[], integer[]) to emps_api;

-- A request's status reads its drop file's ledger row by name.
create index if not exists ingest_files_file_name_idx on raw.ingest_files (file_name);

-- Requests older than the ledger's retention whose drop file has left the ledger (or that
-- never got their readings on disk); a file kept for its quarantined rows keeps its requests.
create or replace function ops.prune_api_requests(p_before timestamptz, p_limit integer)
returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    gone bigint;
begin
    p_before := least(p_before, now() - interval '1 day');
    delete from ops.api_ingest_requests r
    where r.request_id in (
        select o.request_id from ops.api_ingest_requests o
        where o.created_at < p_before
          and (o.file_name is null
               or not exists (select 1 from raw.ingest_files f where f.file_name = o.file_name))
        order by o.created_at
        limit p_limit
    );
    get diagnostics gone = row_count;
    return gone;
end
$$;

revoke all on function ops.prune_api_requests(timestamptz, integer) from public;
grant execute on function ops.prune_api_requests(timestamptz, integer) to emps_alerting;
