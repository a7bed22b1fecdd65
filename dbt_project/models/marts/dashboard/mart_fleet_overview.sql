-- One row per site and equipment type: how many machines sit in each severity band.
with health as (
    select * from {{ ref('mart_equipment_health') }}
),

alerts as (
    select * from {{ ref('stg_alerts') }}
),

open_alerts as (
    select
        equipment_id,
        count(*) as open_alerts
    from alerts
    where status <> 'resolved'
    group by equipment_id
),

final as (
    select
        health.site,
        health.equipment_type,
        count(*) as equipment_count,
        {% for band in severities() -%}
            count(*) filter (where health.severity = '{{ band }}') as {{ band | lower }}_count,
        {% endfor -%}
        count(*) filter (where health.severity is null) as unscored_count,
        avg(health.health_score)::double precision as avg_health_score,
        coalesce(sum(open_alerts.open_alerts), 0)::bigint as open_alerts,
        count(*) filter (where health.is_silent) as silent_equipment
    from health
    left join open_alerts on health.equipment_id = open_alerts.equipment_id
    group by health.site, health.equipment_type
)

select * from final
