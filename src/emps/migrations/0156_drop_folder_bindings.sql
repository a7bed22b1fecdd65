-- Drop folders bound like device keys: a file in incoming/<device>/ of a registered device may
-- only report the equipment that device is bound to. Ingest (emps_ingest, no right on
-- ops.devices) reads the bindings through this function: names and equipment only, never keys.
-- A revoked device keeps the binding it had, so readings the API accepted before the revocation
-- still load; files in its folder report nothing else.
create or replace function ops.device_bindings()
returns table (device_id text, equipment_ids text[])
language sql stable security definer set search_path = pg_catalog, pg_temp
as $$
    select d.device_id, d.equipment_ids from ops.devices d
$$;

revoke all on function ops.device_bindings() from public;
grant execute on function ops.device_bindings() to emps_ingest;
