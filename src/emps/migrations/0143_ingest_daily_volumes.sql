-- The ingest ledger pruned by retention (the alerting role), its volumes kept: the drop files
-- and readings stay by their own retention; a file some kept quarantined row (an unresolved
-- conflict, a row waiting for a retry) points at is never taken. ops.prune_ingest_ledger adds
-- the rows it deletes to their day's totals here, so the Analytics page's ingest chart keeps
-- every day (a row is counted either in the ledger or here).
create table if not exists ops.ingest_daily (
    day timestamptz primary key,
    files bigint not null,
    files_rejected bigint not null,
    rows_total bigint not null,
    rows_loaded bigint not null,
    rows_duplicate bigint not null,
    rows_quarantined bigint not null
);
comment on table ops.ingest_daily is
    'Per UTC day, the counts of the drop files pruned from raw.ingest_files.';
grant select on ops.ingest_daily to emps_reader, emps_writer, emps_alerting;

create or replace function ops.prune_ingest_ledger(p_before timestamptz, p_limit integer)
returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    gone bigint;
begin
    -- Never anything of the last day, whatever the caller's clock says.
    p_before := least(p_before, now() - interval '1 day');
    -- Finished files no kept quarantined row points at; a file still claimed is in flight.
    create temporary table if not exists pruned_files (id bigint primary key) on commit drop;
    truncate pruned_files;
    insert into pruned_files
    select f.id from raw.ingest_files f
    where f.status <> 'claimed' and coalesce(f.finished_at, f.claimed_at) < p_before
      and not exists (select 1 from raw.quarantined_rows q where q.ingest_file_id = f.id)
    order by f.id limit p_limit
    for update skip locked;
    insert into ops.ingest_daily as d (
        day, files, files_rejected, rows_total, rows_loaded, rows_duplicate, rows_quarantined)
    select date_trunc('day', f.received_at, 'UTC'), count(*),
           count(*) filter (where f.status in ('quarantined', 'failed')),
           coalesce(sum(f.rows_total), 0), coalesce(sum(f.rows_loaded), 0),
           coalesce(sum(f.rows_duplicate), 0), coalesce(sum(f.rows_quarantined), 0)
    from raw.ingest_files f join pruned_files p on p.id = f.id
    group by 1
    on conflict (day) do update set
        files = d.files + excluded.files,
        files_rejected = d.files_rejected + excluded.files_rejected,
        rows_total = d.rows_total + excluded.rows_total,
        rows_loaded = d.rows_loaded + excluded.rows_loaded,
        rows_duplicate = d.rows_duplicate + excluded.rows_duplicate,
        rows_quarantined = d.rows_quarantined + excluded.rows_quarantined;
    update raw.ingest_files f set duplicate_of = null
    from pruned_files p where f.duplicate_of = p.id;
    delete from raw.ingest_files f using pruned_files p where f.id = p.id;
    get diagnostics gone = row_count;
    delete from ops.auth_tokens
    where expires_at < p_before or revoked_at < p_before;
    return gone;
end
$$;

revoke all on function ops.prune_ingest_ledger(timestamptz, integer) from public;
grant execute on function ops.prune_ingest_ledger(timestamptz, integer) to emps_alerting;
