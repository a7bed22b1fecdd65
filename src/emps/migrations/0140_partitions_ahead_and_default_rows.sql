-- Month partitions ahead for a platform that runs for months: the daily cleanup flow (the
-- alerting role) creates them EMPS_PARTITIONS_MONTHS_AHEAD ahead of its clock, not only
-- `emps db migrate`. Readings or predictions of a month without a partition land in the
-- table's DEFAULT partition; ops.default_partition_rows() tells the operations rule about them
-- without letting the alerting role read the rows themselves.
grant execute on function ops.ensure_month_partitions(regclass, timestamptz, timestamptz)
    to emps_alerting;

create or replace function ops.default_partition_rows()
returns table (parent text, row_count bigint, first_ts timestamptz, last_ts timestamptz)
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    -- At most 100,000 rows each are counted: enough to say "many", bounded for a 5-minute check.
    select 'raw.sensor_readings', count(*), min(ts), max(ts)
    from (select ts from raw.sensor_readings_default limit 100000) as readings
    union all
    select 'ops.predictions', count(*), min(ts), max(ts)
    from (select ts from ops.predictions_default limit 100000) as predictions
$$;

revoke all on function ops.default_partition_rows() from public;
grant execute on function ops.default_partition_rows() to emps_alerting;
