-- Simulator ground truth: which equipment degrades, how, and when it fails. It lets us measure
-- model quality against what really happened. Nothing downstream may read it: dbt features and
-- the model see the fleet only through its sensors. The dashboard's reader role gets no access;
-- the writer role (which the simulator connects as) may write it.
create schema if not exists sim;
revoke all on schema sim from public;
grant usage on schema sim to emps_writer;

create table if not exists sim.equipment_truth (
    equipment_id text not null references raw.equipment (equipment_id) on delete cascade,
    failure_at timestamptz not null,
    degradation_mode text not null,
    degradation_start timestamptz not null,
    repaired_at timestamptz not null,
    sudden boolean not null,
    -- Scale of the sensor drift (1 = typical) and its time constant: how hard the case is.
    amplitude double precision not null,
    tau_days double precision not null,
    seed bigint not null,
    recorded_at timestamptz not null default now(),
    primary key (equipment_id, failure_at),
    check (degradation_start <= failure_at and failure_at <= repaired_at)
);
create index if not exists equipment_truth_failure_at_idx on sim.equipment_truth (failure_at);

revoke all on sim.equipment_truth from public, emps_reader;
grant select, insert, update, delete on sim.equipment_truth to emps_writer;
