-- The ingest counters Prometheus scrapes (emps.metrics), kept as files change status instead
-- of summed over the whole ledger at every scrape: raw.ingest_files gains ~1.4 M rows a day at
-- 1,000 devices, and its rows may be pruned while a counter must never go down. One row,
-- updated once per statement that inserts or updates ledger rows (the deltas of its rows).
create table if not exists ops.ingest_totals (
    id boolean primary key default true check (id),
    rows_loaded bigint not null default 0,
    rows_quarantined bigint not null default 0,
    rows_conflict bigint not null default 0,
    files_quarantined bigint not null default 0,
    files_duplicate bigint not null default 0
);

insert into ops.ingest_totals
    (rows_loaded, rows_quarantined, rows_conflict, files_quarantined, files_duplicate)
select
    coalesce(sum(rows_loaded), 0),
    coalesce(sum(rows_quarantined), 0),
    coalesce(sum(rows_conflict), 0),
    count(*) filter (where status = 'quarantined'),
    count(*) filter (where status = 'duplicate')
from raw.ingest_files
on conflict (id) do nothing;

create or replace function ops.add_ingest_totals() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    with changes as (
        select
            coalesce(rows_loaded, 0) as rows_loaded,
            coalesce(rows_quarantined, 0) as rows_quarantined,
            coalesce(rows_conflict, 0) as rows_conflict,
            (status = 'quarantined')::int as files_quarantined,
            (status = 'duplicate')::int as files_duplicate
        from new_rows
        union all
        select
            -coalesce(rows_loaded, 0),
            -coalesce(rows_quarantined, 0),
            -coalesce(rows_conflict, 0),
            -(status = 'quarantined')::int,
            -(status = 'duplicate')::int
        from old_rows
    ),
    delta as (
        select
            sum(rows_loaded) as rows_loaded,
            sum(rows_quarantined) as rows_quarantined,
            sum(rows_conflict) as rows_conflict,
            sum(files_quarantined) as files_quarantined,
            sum(files_duplicate) as files_duplicate
        from changes
    )
    update ops.ingest_totals as totals set
        rows_loaded = totals.rows_loaded + delta.rows_loaded,
        rows_quarantined = totals.rows_quarantined + delta.rows_quarantined,
        rows_conflict = totals.rows_conflict + delta.rows_conflict,
        files_quarantined = totals.files_quarantined + delta.files_quarantined,
        files_duplicate = totals.files_duplicate + delta.files_duplicate
    from delta
    where delta.rows_loaded is not null
        and (delta.rows_loaded, delta.rows_quarantined, delta.rows_conflict,
             delta.files_quarantined, delta.files_duplicate) <> (0, 0, 0, 0, 0);
    return null;
end
$$;

-- An insert has no old rows: an empty table stands in for them (no transition table on insert).
create or replace function ops.add_inserted_ingest_totals() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update ops.ingest_totals as totals set
        rows_loaded = totals.rows_loaded + added.rows_loaded,
        rows_quarantined = totals.rows_quarantined + added.rows_quarantined,
        rows_conflict = totals.rows_conflict + added.rows_conflict,
        files_quarantined = totals.files_quarantined + added.files_quarantined,
        files_duplicate = totals.files_duplicate + added.files_duplicate
    from (
        select
            coalesce(sum(rows_loaded), 0) as rows_loaded,
            coalesce(sum(rows_quarantined), 0) as rows_quarantined,
            coalesce(sum(rows_conflict), 0) as rows_conflict,
            count(*) filter (where status = 'quarantined') as files_quarantined,
            count(*) filter (where status = 'duplicate') as files_duplicate
        from new_rows
    ) as added
    where (added.rows_loaded, added.rows_quarantined, added.rows_conflict,
           added.files_quarantined, added.files_duplicate) <> (0, 0, 0, 0, 0);
    return null;
end
$$;

drop trigger if exists ingest_totals_on_update on raw.ingest_files;
create trigger ingest_totals_on_update after update on raw.ingest_files
    referencing old table as old_rows new table as new_rows
    for each statement execute function ops.add_ingest_totals();
drop trigger if exists ingest_totals_on_insert on raw.ingest_files;
create trigger ingest_totals_on_insert after insert on raw.ingest_files
    referencing new table as new_rows
    for each statement execute function ops.add_inserted_ingest_totals();

revoke all on function ops.add_ingest_totals() from public;
revoke all on function ops.add_inserted_ingest_totals() from public;
revoke all on ops.ingest_totals from public;
grant select on ops.ingest_totals to emps_reader;
