-- One row per recorded failure of an equipment.
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
        source as recorded_by
    from source
)

select * from final
