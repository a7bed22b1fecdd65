-- Fix of 0050: ops.retire_month_partitions read the month from the last 7 characters of the
-- partition name ("2026m11"), which the '"y"YYYY"m"MM' pattern misreads; the suffix is 8 long.

create or replace function ops.retire_month_partitions(
    parent regclass, p_before timestamptz, p_mode text default 'detach'
) returns setof text
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    schema_name text;
    table_name text;
    part record;
    month_start date;
begin
    if p_mode not in ('detach', 'drop') then
        raise exception 'partition retention mode % is not one of detach, drop', p_mode
            using errcode = 'check_violation';
    end if;
    select n.nspname, c.relname into schema_name, table_name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = parent;
    for part in
        select cn.nspname as part_schema, c.relname as part_name
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_namespace cn on cn.oid = c.relnamespace
        where i.inhparent = parent
          and c.relname ~ ('^' || table_name || '_y[0-9]{4}m[0-9]{2}$')
        order by c.relname
    loop
        month_start := to_date(right(part.part_name, 8), '"y"YYYY"m"MM');
        if (month_start + interval '1 month') <= (p_before at time zone 'UTC') then
            execute format('alter table %I.%I detach partition %I.%I',
                           schema_name, table_name, part.part_schema, part.part_name);
            if p_mode = 'drop' then
                execute format('drop table %I.%I', part.part_schema, part.part_name);
            end if;
            insert into ops.audit_log (actor, action, target_type, target_id, details)
            values ('emps-retention', 'partition.' || p_mode, 'partition',
                    part.part_schema || '.' || part.part_name,
                    jsonb_build_object('parent', schema_name || '.' || table_name,
                                       'before', p_before));
            return next part.part_schema || '.' || part.part_name;
        end if;
    end loop;
end
$$;
