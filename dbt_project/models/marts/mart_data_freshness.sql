-- One row per equipment: when it last reported and whether it has gone silent.
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

-- Inlined: used twice, and its filters must reach the raw table\'s index.
readings as not materialized (
    select * from {{ ref('stg_sensor_readings') }}
),

final as (
    select
        equipment.equipment_id,
        equipment.equipment_type,
        equipment.site,
        last_reading.ts as last_reading_at,
        date_part('epoch', now() - last_reading.ts) / 60.0 as minutes_since_last_reading,
        recent.readings_last_hour,
        coalesce(
            last_reading.ts < now() - interval '{{ var("silent_minutes") | int }} minutes', true
        ) as is_silent
    from equipment
    left join lateral (
        select readings.ts
        from readings
        where readings.equipment_id = equipment.equipment_id
        order by readings.ts desc
        limit 1
    ) as last_reading on true
    left join lateral (
        select count(*) as readings_last_hour
        from readings
        where
            readings.equipment_id = equipment.equipment_id
            and readings.ts > now() - interval '1 hour'
    ) as recent on true
)

select * from final
