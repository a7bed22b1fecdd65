-- The raw layer: what devices and operators told us, kept as received (never updated by dbt).

create table if not exists raw.equipment (
    equipment_id text primary key
        check (equipment_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    equipment_type text not null,
    site text not null,
    unit text,
    commissioned_at timestamptz,
    registered_at timestamptz not null default now(),
    source text not null default 'import'
);
create index if not exists equipment_site_idx on raw.equipment (site);
create index if not exists equipment_type_idx on raw.equipment (equipment_type);

-- Sensor columns are added by `emps db migrate` from the catalog (one column per sensor).
-- The primary key (equipment_id, ts) also serves lookups by equipment_id alone.
create table if not exists raw.sensor_readings (
    equipment_id text not null,
    ts timestamptz not null,
    ingest_file_id bigint,
    ingested_at timestamptz not null default now(),
    primary key (equipment_id, ts)
) partition by range (ts);
create table if not exists raw.sensor_readings_default
    partition of raw.sensor_readings default;
create index if not exists sensor_readings_ingested_at_idx
    on raw.sensor_readings using brin (ingested_at);

create table if not exists raw.ingest_files (
    id bigserial primary key,
    file_name text not null,
    sha256 text not null,
    size_bytes bigint not null,
    format text,
    received_at timestamptz not null,
    claimed_at timestamptz not null default now(),
    finished_at timestamptz,
    status text not null default 'claimed'
        check (status in ('claimed', 'loaded', 'partial', 'duplicate', 'quarantined', 'failed')),
    rows_total integer,
    rows_loaded integer,
    rows_duplicate integer,
    rows_quarantined integer,
    error text,
    flow_run_id text,
    claimed_by text
);
create index if not exists ingest_files_sha256_idx on raw.ingest_files (sha256);
create index if not exists ingest_files_status_idx on raw.ingest_files (status);
create index if not exists ingest_files_received_at_idx on raw.ingest_files (received_at);

create table if not exists raw.quarantined_rows (
    id bigserial primary key,
    ingest_file_id bigint references raw.ingest_files (id),
    file_name text not null,
    row_number integer,
    equipment_id text,
    reasons text[] not null,
    raw_values jsonb not null,
    quarantined_at timestamptz not null default now()
);
create index if not exists quarantined_rows_file_idx on raw.quarantined_rows (ingest_file_id);
create index if not exists quarantined_rows_at_idx on raw.quarantined_rows (quarantined_at);

create table if not exists raw.failure_events (
    id bigserial primary key,
    equipment_id text not null references raw.equipment (equipment_id),
    failed_at timestamptz not null,
    failure_mode text,
    source text not null default 'operator'
        check (source in ('simulator', 'operator', 'maintenance', 'import')),
    repaired_at timestamptz,
    notes text,
    recorded_at timestamptz not null default now(),
    unique (equipment_id, failed_at),
    check (repaired_at is null or repaired_at >= failed_at)
);
create index if not exists failure_events_failed_at_idx on raw.failure_events (failed_at);

-- The catalog as the database sees it (rewritten by every migrate), for SQL and dbt to join.
create table if not exists raw.sensor_catalog (
    sensor text primary key,
    unit text not null,
    description text not null default '',
    valid_min double precision not null,
    valid_max double precision not null,
    required boolean not null
);
create table if not exists raw.equipment_type_envelopes (
    equipment_type text not null,
    sensor text not null,
    normal_low double precision not null,
    normal_high double precision not null,
    primary key (equipment_type, sensor)
);
