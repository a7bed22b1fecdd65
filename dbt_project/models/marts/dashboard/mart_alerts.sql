-- One row per alert, with its equipment's type and site and how long it took (or has so far
-- taken) to acknowledge and resolve. A view over the ops table: an acknowledgement shows at once.
with alerts as (
    select * from {{ ref('stg_alerts') }}
),

equipment as (
    select * from {{ ref('stg_equipment') }}
),

final as (
    select
        alerts.alert_id,
        alerts.equipment_id,
        equipment.equipment_type,
        equipment.site,
        alerts.severity,
        {{ severity_rank('alerts.severity') }} as severity_rank,
        alerts.status,
        alerts.message,
        alerts.created_at,
        alerts.acknowledged_at,
        alerts.acknowledged_by,
        round(
            (date_part('epoch', coalesce(alerts.acknowledged_at, now()) - alerts.created_at) / 60)::numeric, 1
        )::float8 as minutes_to_acknowledge,
        alerts.resolved_at,
        alerts.resolved_by,
        round((date_part('epoch', alerts.resolved_at - alerts.created_at) / 60)::numeric, 1)::float8
            as minutes_to_resolve,
        alerts.resolution_note,
        alerts.escalation_level
    from alerts
    left join equipment on alerts.equipment_id = equipment.equipment_id
)

select * from final
