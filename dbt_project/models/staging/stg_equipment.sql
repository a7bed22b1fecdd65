-- One row per equipment in the registry.
with source as (
    select * from {{ source('raw', 'equipment') }}
),

final as (
    select
        equipment_id,
        equipment_type,
        site,
        unit,
        commissioned_at,
        registered_at,
        holdout
    from source
)

select * from final
