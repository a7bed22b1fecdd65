-- Model integrity: the SHA-256 of each model version's artifact (its whole MLflow
-- model directory), recorded by EMPS when training registers it and at each promotion; the
-- scorer and the dashboard's what-if load a version only when its files still hash to that.
alter table ops.model_promotions add column if not exists artifact_sha256 text
    check (artifact_sha256 ~ '^[0-9a-f]{64}$');

create table if not exists ops.model_artifacts (
    model_name text not null,
    version text not null,
    artifact_sha256 text not null check (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    recorded_at timestamptz not null default now(),
    recorded_by text not null,
    primary key (model_name, version)
);

grant select, insert on ops.model_artifacts to emps_scoring;
grant select on ops.model_artifacts to emps_reader;
