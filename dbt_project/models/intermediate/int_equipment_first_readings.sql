{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
-- One row per equipment that has sent at least one reading: when its data starts.
-- Incremental: equipment already listed never changes, so each run only looks up newcomers
-- (one index probe each).
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

readings as (
    select * from {{ ref('stg_sensor_readings') }}
),

candidates as (
    select equipment.equipment_id
    from equipment
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as known
            where known.equipment_id = equipment.equipment_id
        )
    {% endif %}
),

final as (
    select
        candidates.equipment_id,
        first_reading.ts as first_reading_at
    from candidates
    cross join lateral (
        select readings.ts
        from readings
        where readings.equipment_id = candidates.equipment_id
        order by readings.ts
        limit 1
    ) as first_reading
)

select * from final
