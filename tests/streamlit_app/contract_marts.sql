-- Stand-ins for the dbt marts the dashboard reads (contract columns exactly), used by the tests and
-- bench/dashboard.py when dbt_project has not built them. Created as emps_writer so a later real
-- dbt build (which runs as emps_writer) can replace them.
create or replace view analytics.mart_data_freshness as
with silent as (
    select coalesce((select value from ops.thresholds where key = 'silent_minutes'), 15) as minutes
)
select
    e.equipment_id,
    e.equipment_type,
    e.site,
    r.last_reading_at,
    extract(epoch from now() - r.last_reading_at) / 60 as minutes_since_last_reading,
    coalesce(h.readings_last_hour, 0) as readings_last_hour,
    r.last_reading_at is null
        or r.last_reading_at < now() - make_interval(mins => (select minutes from silent)::int)
        as is_silent
from raw.equipment e
left join lateral (
    select max(s.ts) as last_reading_at from raw.sensor_readings s
    where s.equipment_id = e.equipment_id
) r on true
left join lateral (
    select count(*) as readings_last_hour from raw.sensor_readings s
    where s.equipment_id = e.equipment_id and s.ts > now() - interval '1 hour'
) h on true;

create or replace view analytics.mart_equipment_health as
select
    e.equipment_id,
    e.equipment_type,
    e.site,
    f.last_reading_at,
    f.minutes_since_last_reading,
    p.failure_probability,
    p.health_score,
    p.severity,
    p.days_until_failure,
    p.model_version,
    p.predicted_at,
    p.explanation,
    a.id as open_alert_id,
    a.severity as open_alert_severity,
    a.status as open_alert_status,
    t.id as next_task_id,
    t.task_type as next_task_type,
    t.scheduled_date as next_task_date
from raw.equipment e
left join analytics.mart_data_freshness f on f.equipment_id = e.equipment_id
left join lateral (
    select * from ops.predictions p where p.equipment_id = e.equipment_id
    order by p.ts desc limit 1
) p on true
left join lateral (
    select * from ops.alerts a where a.equipment_id = e.equipment_id and a.status <> 'resolved'
    order by array_position(array['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'], a.severity) desc,
             a.created_at desc
    limit 1
) a on true
left join lateral (
    select * from ops.maintenance_tasks t
    where t.equipment_id = e.equipment_id and t.status in ('scheduled', 'in_progress')
    order by t.scheduled_date limit 1
) t on true;

create or replace view analytics.mart_fleet_overview as
select
    site,
    equipment_type,
    count(*) as equipment_count,
    count(*) filter (where severity = 'LOW') as low_count,
    count(*) filter (where severity = 'MEDIUM') as medium_count,
    count(*) filter (where severity = 'HIGH') as high_count,
    count(*) filter (where severity = 'CRITICAL') as critical_count,
    count(*) filter (where severity is null) as unscored_count,
    avg(health_score)::float8 as avg_health_score,
    count(open_alert_id) as open_alerts,
    count(*) filter (where last_reading_at is null
        or minutes_since_last_reading > coalesce(
            (select value from ops.thresholds where key = 'silent_minutes'), 15))
        as silent_equipment
from analytics.mart_equipment_health
group by site, equipment_type;

create or replace view analytics.mart_alert_statistics as
select
    date_trunc('day', created_at) as day,
    severity,
    status,
    count(*) as alert_count,
    avg(extract(epoch from acknowledged_at - created_at) / 60)::float8
        as mean_minutes_to_acknowledge,
    avg(extract(epoch from resolved_at - created_at) / 60)::float8 as mean_minutes_to_resolve
from ops.alerts
group by 1, 2, 3;

create or replace view analytics.mart_maintenance_schedule as
select
    t.id as task_id,
    t.equipment_id,
    e.equipment_type,
    e.site,
    t.alert_id,
    t.task_type,
    t.priority,
    t.status,
    t.scheduled_date,
    t.notes,
    t.created_by,
    t.created_at
from ops.maintenance_tasks t
join raw.equipment e on e.equipment_id = t.equipment_id
where t.status not in ('completed', 'cancelled');
