-- Catalog v2: channels with a role (sensor or operating setting), per-type channel subsets and
-- clocks, optional sites, a usage counter on readings, and the operating regimes found from the
-- settings.

-- Sites are optional: equipment without one gets no site-relative features.
alter table raw.equipment alter column site drop not null;

-- The usage counter (cycles, operating hours) of counter-clocked types; null for wall-time types.
alter table raw.sensor_readings add column if not exists cycle double precision;
-- A counter slot's readings are found by their counter.
create index if not exists sensor_readings_cycle_idx
    on raw.sensor_readings (equipment_id, cycle) where cycle is not null;

alter table raw.sensor_catalog add column if not exists role text not null default 'sensor'
    check (role in ('sensor', 'setting'));

-- The catalog's equipment types as the database sees them (rewritten by every migrate).
create table if not exists raw.equipment_types (
    equipment_type text primary key,
    description text not null default '',
    clock_kind text not null check (clock_kind in ('time', 'counter')),
    clock_unit text not null,
    interval_s double precision not null,
    counter_start timestamptz,
    slot_seconds double precision not null,
    life_unit text not null,
    life_unit_seconds double precision not null,
    horizon_seconds double precision not null
);

-- The channels each type has (its own subset of the catalog's).
create table if not exists raw.equipment_type_channels (
    equipment_type text not null,
    channel text not null,
    primary key (equipment_type, channel)
);

-- Operating regimes of a type with setting channels: per regime, its centre and scale on each
-- setting (k-means on the settings, emps.regimes). Readings belong to the nearest centre.
create table if not exists raw.operating_regimes (
    equipment_type text not null,
    regime integer not null,
    setting text not null,
    centre double precision not null,
    scale double precision not null check (scale > 0),
    share double precision,
    fitted_at timestamptz not null default now(),
    primary key (equipment_type, regime, setting)
);
