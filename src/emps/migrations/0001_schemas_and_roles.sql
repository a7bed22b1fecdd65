-- Schemas and the two application roles.
-- emps_writer: flows, simulator and dbt (owns the analytics schema dbt builds into).
-- emps_reader: the dashboard's reads; it can never write.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'emps_writer') then
        create role emps_writer login;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'emps_reader') then
        create role emps_reader login;
    end if;
end
$$;

create schema if not exists raw;
create schema if not exists ops;
create schema if not exists analytics authorization emps_writer;

grant usage on schema raw, ops, analytics to emps_writer, emps_reader;
grant create on schema analytics to emps_writer;

-- Tables created later by the migrating role: writer reads and writes, reader only reads.
alter default privileges in schema raw, ops
    grant select, insert, update, delete on tables to emps_writer;
alter default privileges in schema raw, ops grant usage, select on sequences to emps_writer;
alter default privileges in schema raw, ops grant select on tables to emps_reader;
-- Tables dbt creates as emps_writer in analytics are readable by the dashboard.
alter default privileges for role emps_writer in schema analytics
    grant select on tables to emps_reader;

-- Monthly partitions, created ahead of time. Rows for a month with no partition yet land in
-- the default partition (never lost); creating that month's partition moves them out.
create or replace function ops.ensure_month_partitions(
    parent regclass, from_ts timestamptz, to_ts timestamptz
) returns integer
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    schema_name text;
    table_name text;
    month_start date := date_trunc('month', from_ts at time zone 'UTC')::date;
    month_end date;
    part_name text;
    created integer := 0;
    default_part text;
    n_moved bigint;
begin
    select n.nspname, c.relname into schema_name, table_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = parent;
    default_part := table_name || '_default';
    while month_start <= (to_ts at time zone 'UTC')::date loop
        month_end := (month_start + interval '1 month')::date;
        part_name := format('%s_y%sm%s', table_name,
                            to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        if to_regclass(format('%I.%I', schema_name, part_name)) is null then
            -- Serialise with concurrent inserts that could land in the default partition.
            execute format('lock table %I.%I in share row exclusive mode', schema_name, table_name);
            execute format('create table %I.%I (like %I.%I including defaults including constraints)',
                           schema_name, part_name, schema_name, table_name);
            execute format(
                'with moved as (delete from %I.%I where ts >= %L::timestamptz and ts < %L::timestamptz'
                ' returning *) insert into %I.%I select * from moved',
                schema_name, default_part,
                month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00',
                schema_name, part_name);
            get diagnostics n_moved = row_count;
            execute format(
                'alter table %I.%I attach partition %I.%I for values from (%L) to (%L)',
                schema_name, table_name, schema_name, part_name,
                month_start::text || ' 00:00:00+00', month_end::text || ' 00:00:00+00');
            created := created + 1;
        end if;
        month_start := month_end;
    end loop;
    return created;
end
$$;

revoke all on function ops.ensure_month_partitions(regclass, timestamptz, timestamptz) from public;
grant execute on function ops.ensure_month_partitions(regclass, timestamptz, timestamptz)
    to emps_writer;
