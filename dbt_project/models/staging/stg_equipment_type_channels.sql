-- One row per equipment type and channel it has.
with source as (
    select * from {{ source('raw', 'equipment_type_channels') }}
),

final as (
    select
        equipment_type,
        channel
    from source
)

select * from final
