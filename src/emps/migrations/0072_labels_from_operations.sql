-- Labels from operations: what crews find becomes what the model learns from.
-- A task completed as failed_before_service records the failure it found. A task completed as
-- fault_found (one raised by an alert, or an inspection or service that found a fault; a repair
-- only mends a failure already recorded) records a prevented failure: the machine was on its way
-- to failing and was caught in time, so the hours before are labelled as leading to a failure
-- (not healthy), while their remaining life stays unknown (it never failed).

alter table raw.failure_events add column if not exists prevented boolean not null default false;
alter table raw.failure_events add column if not exists task_id bigint;

create or replace function raw.failure_from_task() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if new.status <> 'completed' or new.completed_date is null
        or new.outcome is null or new.outcome = 'no_fault_found'
        or (tg_op = 'UPDATE' and old.status = 'completed' and old.outcome is not distinct from new.outcome)
    then
        return new;
    end if;
    if new.outcome = 'failed_before_service' then
        insert into raw.failure_events
            (equipment_id, failed_at, failure_mode, source, repaired_at, notes, task_id)
        values (new.equipment_id, new.completed_date, 'found failed at service', 'maintenance',
                new.completed_date, coalesce(new.notes, 'maintenance task #' || new.id), new.id)
        on conflict (equipment_id, failed_at) do nothing;
    elsif new.outcome = 'fault_found' and (new.alert_id is not null or new.task_type <> 'repair') then
        insert into raw.failure_events
            (equipment_id, failed_at, failure_mode, source, repaired_at, notes, prevented, task_id)
        values (new.equipment_id, new.completed_date, 'fault found after an alert', 'maintenance',
                new.completed_date,
                coalesce(new.notes, 'maintenance task #' || new.id),
                true, new.id)
        on conflict (equipment_id, failed_at) do nothing;
    end if;
    return new;
end
$$;

drop trigger if exists maintenance_task_labels on ops.maintenance_tasks;
create trigger maintenance_task_labels
    after insert or update of status, outcome, completed_date on ops.maintenance_tasks
    for each row execute function raw.failure_from_task();
