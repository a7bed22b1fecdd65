-- Fleet packs: units held out of training (a pack's test units, cut before they failed) and
-- their true remaining life, which only evaluation reads.
alter table raw.equipment add column if not exists holdout boolean not null default false;

create table if not exists raw.heldout_remaining_life (
    equipment_id text primary key references raw.equipment (equipment_id) on delete cascade,
    remaining_life double precision not null check (remaining_life >= 0),
    recorded_at timestamptz not null default now()
);

-- Services recorded by a fleet import are found again on a second import of the same pack.
create unique index if not exists maintenance_tasks_imported_idx
    on ops.maintenance_tasks (equipment_id, task_type, completed_date)
    where created_by = 'fleet import';
