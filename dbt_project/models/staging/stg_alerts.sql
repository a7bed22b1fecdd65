-- One row per alert.
with source as (
    select * from {{ source('ops', 'alerts') }}
),

final as (
    select
        id as alert_id,
        equipment_id,
        prediction_id,
        severity,
        status,
        message,
        created_at,
        acknowledged_at,
        acknowledged_by,
        resolved_at,
        resolved_by,
        resolution_note,
        escalation_level
    from source
)

select * from final
