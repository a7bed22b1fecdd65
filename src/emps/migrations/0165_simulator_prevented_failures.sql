-- The simulator's services can find a developing fault (a prevented failure), and failures are
-- recorded only to the hour. The ground truth says which episodes were prevented and what the
-- records hold for each (the failure's hour, or the service that found the fault); for a
-- prevented one failure_at is when it would have failed, after its repair at the service.
alter table sim.equipment_truth add column if not exists prevented boolean not null default false;
alter table sim.equipment_truth add column if not exists recorded_failure_at timestamptz;
alter table sim.equipment_truth drop constraint if exists equipment_truth_check;
alter table sim.equipment_truth add constraint equipment_truth_check check (
    degradation_start <= failure_at and (prevented or failure_at <= repaired_at)
);

-- A fault found without an alert (a service or inspection that found it) is named for what
-- found it, not "after an alert".
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
        values (new.equipment_id, new.completed_date,
                case
                    when new.alert_id is not null then 'fault found after an alert'
                    when new.task_type = 'inspection' then 'fault found at an inspection'
                    else 'fault found at a ' || new.task_type || ' service'
                end,
                'maintenance',
                new.completed_date,
                coalesce(new.notes, 'maintenance task #' || new.id),
                true, new.id)
        on conflict (equipment_id, failed_at) do nothing;
    end if;
    return new;
end
$$;
