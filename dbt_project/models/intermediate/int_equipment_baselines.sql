{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
-- One row per equipment whose baseline period is over: per sensor, the mean and standard
-- deviation of its levels over its first `baseline` slots (`<s>_baseline_mean|std`, null with
-- fewer than baseline_min_slots values), taken as its healthy state, and its mean level against
-- its site's over the same slots (`<s>_site_baseline`, wall-time equipment with a site).
-- Feature rows use it from baseline_end_slot on only (no future data). Computed once.
with first_readings as (
    select * from {{ ref('int_equipment_first_readings') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

levels as not materialized (
    select * from {{ ref('int_slot_levels') }}
),

site_levels as not materialized (
    select * from {{ ref('int_site_slot_levels') }}
),

candidates as (
    select
        first_readings.equipment_id,
        first_readings.first_slot,
        equipment.baseline_min_slots,
        equipment.site,
        equipment.slot_width,
        equipment.axis,
        first_readings.first_slot + equipment.baseline_slots as baseline_end_slot
    from first_readings
    inner join equipment on first_readings.equipment_id = equipment.equipment_id
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as known
            where known.equipment_id = first_readings.equipment_id
        )
    {% endif %}
),

complete as (
    -- The period is over once a slot at or after its end holds a reading.
    select candidates.*
    from candidates
    where exists (
        select 1 from levels
        where
            levels.equipment_id = candidates.equipment_id
            and levels.slot >= candidates.baseline_end_slot
    )
),

final as (
    -- Lateral, so each equipment's baseline period is one index range scan.
    select
        baseline.*,
        complete.equipment_id,
        complete.first_slot,
        complete.baseline_end_slot
    from complete
    cross join lateral (  -- noqa: ST05
        select
            {% for sensor in sensors() -%}
                {{ baseline_stats(
                    sensor, 'levels.' ~ sensor ~ '_level',
                    'levels.' ~ sensor ~ '_level - site_levels.' ~ sensor ~ '_site_level',
                    'complete.baseline_min_slots'
                ) }},
            {% endfor -%}
            count(*) as baseline_slots
        from levels
        left join site_levels
            on
                complete.axis = 'time'
                and complete.site = site_levels.site
                and complete.slot_width = site_levels.slot_width
                and levels.slot = site_levels.slot
        where
            levels.equipment_id = complete.equipment_id
            and levels.slot >= complete.first_slot
            and levels.slot < complete.baseline_end_slot
    ) as baseline
)

select * from final
