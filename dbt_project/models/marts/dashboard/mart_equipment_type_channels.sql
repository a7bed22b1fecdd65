-- One row per equipment type and channel it has: unit, role, the catalog's normal band (when
-- it gives one) and valid range.
with channels as (
    select * from {{ ref('stg_equipment_type_channels') }}
),

catalog as (
    select * from {{ ref('stg_sensor_catalog') }}
),

envelopes as (
    select * from {{ ref('stg_equipment_type_envelopes') }}
),

final as (
    select
        channels.equipment_type,
        catalog.sensor,
        catalog.unit,
        catalog.description,
        catalog.role,
        envelopes.normal_low,
        envelopes.normal_high,
        catalog.valid_min,
        catalog.valid_max
    from channels
    inner join catalog on channels.channel = catalog.sensor
    left join envelopes
        on
            channels.equipment_type = envelopes.equipment_type
            and channels.channel = envelopes.sensor
)

select * from final
