{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
-- One row per equipment that has sent a reading: its first slot and that slot's time.
-- Incremental: equipment already listed never changes, so each run only looks up newcomers
-- (one index probe each).
with equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

slots as (
    select * from {{ ref('int_sensor_readings_slots') }}
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
        first_slot.slot as first_slot,
        first_slot.ts as first_reading_at
    from candidates
    cross join lateral (
        select
            slots.slot,
            slots.ts
        from slots
        where slots.equipment_id = candidates.equipment_id
        order by slots.slot
        limit 1
    ) as first_slot
)

select * from final
