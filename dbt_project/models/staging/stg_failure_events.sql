-- One row per recorded failure of an equipment, or prevented failure (a fault found in time).
with source as (
    select * from {{ source('raw', 'failure_events') }}
),

final as (
    select
        id as failure_id,
        equipment_id,
        failed_at,
        repaired_at,
        failure_mode,
        source as recorded_by,
        prevented
    from source
)

select * from final
