-- One row per equipment: when it last reported and whether it has gone silent.
-- The last reading comes from mart_equipment_last_reading (refreshed after each ingest and
-- scoring run); the age and the silent flag are computed against the clock at query time, so
-- equipment still goes silent when nothing refreshes that table.
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

last_readings as (
    select * from {{ ref('mart_equipment_last_reading') }}
),

readings as (
    select * from {{ ref('stg_sensor_readings') }}
),

final as (
    select
        equipment.equipment_id,
        equipment.equipment_type,
        equipment.site,
        last_readings.last_reading_at,
        date_part('epoch', now() - last_readings.last_reading_at) / 60.0
            as minutes_since_last_reading,
        recent.readings_last_hour,
        coalesce(
            last_readings.last_reading_at
            < now() - {{ silent_limit() }},
            true
        ) as is_silent,
        last_readings.refreshed_at as last_reading_as_of
    from equipment
    left join last_readings on equipment.equipment_id = last_readings.equipment_id
    left join lateral (
        select count(*) as readings_last_hour
        from readings
        where
            readings.equipment_id = equipment.equipment_id
            and readings.ts > now() - interval '1 hour'
    ) as recent on true
)

select * from final
