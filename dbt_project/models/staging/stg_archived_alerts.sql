-- One row per alert archived by retention (ops.archived_alerts): what the Analytics counts need.
with source as (
    select * from {{ source('ops', 'archived_alerts') }}
),

final as (
    select
        id as alert_id,
        equipment_id,
        severity,
        'resolved' as status,
        created_at,
        acknowledged_at,
        resolved_at,
        escalation_level
    from source
)

select * from final
