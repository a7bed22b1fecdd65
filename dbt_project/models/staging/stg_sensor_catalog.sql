-- One row per catalog channel: its unit, role (sensor or setting) and valid range.
with source as (
    select * from {{ source('raw', 'sensor_catalog') }}
),

final as (
    select
        sensor,
        unit,
        description,
        role,
        valid_min,
        valid_max,
        required
    from source
)

select * from final
