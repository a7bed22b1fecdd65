-- One row per equipment type and sensor: the healthy band the catalog declares.
with source as (
    select * from {{ source('raw', 'equipment_type_envelopes') }}
),

final as (
    select
        equipment_type,
        sensor,
        normal_low,
        normal_high,
        (normal_low + normal_high) / 2 as fleet_norm_mean,
        -- The band is read as mean +/- 2 standard deviations.
        (normal_high - normal_low) / 4 as fleet_norm_std
    from source
)

select * from final
