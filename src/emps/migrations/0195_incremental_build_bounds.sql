-- How far back an incremental dbt model must look for readings it has not built from yet.
-- A reading's ingested_at is its writing transaction's start (the column's default, now()), and
-- a transaction commits later: a build cannot tell from the newest ingested_at it built alone
-- which earlier ones were still uncommitted then, so models looked back a fixed margin (var
-- ingest_lookback_minutes) and re-read every reading written in it. After a bulk load (history,
-- an import, a gateway's backlog) that was every loaded reading, on every build for the margin's
-- ten minutes. ops.readings_visible_before() tells, at the start of a model's run, the earliest
-- time a transaction still open could have stamped: every reading stamped before it is
-- committed, so that run sees it. Each incremental model records the bound it ran with
-- (macros/build_bounds.sql) and later runs look back to it, not further.
create or replace function ops.readings_visible_before()
returns timestamptz
language sql stable security definer set search_path = pg_catalog, pg_temp
as $$
    -- The earliest start of an open transaction of another client of this database, now() if
    -- none; null when some client's transaction cannot be seen (a server where the owner may
    -- not read other roles' activity): callers then keep the fixed margin.
    select case
        when bool_or(a.query = '<insufficient privilege>') then null
        else least(now(), min(a.xact_start))
    end
    from pg_stat_activity a
    where
        a.datname = current_database()
        and a.backend_type = 'client backend'
        and a.pid <> pg_backend_pid()
$$;
comment on function ops.readings_visible_before() is
    'The time before which every reading''s transaction has committed (null when unknown).';
revoke all on function ops.readings_visible_before() from public;
grant execute on function ops.readings_visible_before() to emps_writer;

create table if not exists ops.dbt_build_bounds (
    relation text primary key,
    -- Every reading stamped before this was built from by the relation's last run; null when
    -- that run could not tell.
    visible_before timestamptz,
    recorded_at timestamptz not null default now()
);
comment on table ops.dbt_build_bounds is
    'Per incremental dbt model: the readings its last run had all seen (macros/build_bounds.sql).';
grant select, insert, update, delete on ops.dbt_build_bounds to emps_writer;
