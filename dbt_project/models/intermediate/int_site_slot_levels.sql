{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['site', 'slot_width', 'slot'],
        indexes=[
            {'columns': ['site', 'slot_width', 'slot'], 'unique': True},
            {'columns': ['ingested_at']},
        ],
    )
}}
-- One row per site, slot width and slot of wall-time equipment there: per sensor, the median
-- level of the site's machines that slot (`<s>_site_level`; machines on the same grid only).
-- What the site's weather and time of day do to every machine there; the feature table
-- subtracts it, so that a machine warming faster than its neighbours stands out from a hot
-- afternoon. Equipment without a site, and counter-clocked equipment, have none.
-- Incremental: the site slots whose machines' levels changed since the last run are recomputed
-- (the current slot each run while it fills; features only read slots that are over).
with levels as not materialized (
    select * from {{ ref('int_slot_levels') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
    where site is not null and axis = 'time'
),

{% if is_incremental() %}
    touched as (
        select distinct
            equipment.site,
            equipment.slot_width,
            levels.slot
        from levels
        inner join equipment on levels.equipment_id = equipment.equipment_id
        where {{ not_built_yet('levels', {
            'site': 'equipment.site', 'slot_width': 'equipment.slot_width', 'slot': 'levels.slot'
        }) }}
    ),

    site_slots as (
        -- Every machine of the site hours to compute: one index lookup each.
        select
            levels.*,
            equipment.site,
            equipment.slot_width
        from touched
        inner join equipment
            on
                touched.site = equipment.site
                and touched.slot_width = equipment.slot_width
        inner join levels
            on
                equipment.equipment_id = levels.equipment_id
                and touched.slot = levels.slot
    ),
{% else %}
    site_slots as (
        select
            levels.*,
            equipment.site,
            equipment.slot_width
        from levels
        inner join equipment on levels.equipment_id = equipment.equipment_id
    ),
{% endif %}

final as (
    select
        site_slots.site,
        site_slots.slot_width,
        site_slots.slot,
        {% for sensor in sensors() -%}
            percentile_cont(0.5) within group (
                order by site_slots.{{ sensor }}_level
            ) as {{ sensor }}_site_level,
        {% endfor -%}
        count(*) as machines,
        max(site_slots.ingested_at) as ingested_at
    from site_slots
    group by site_slots.site, site_slots.slot_width, site_slots.slot
)

select * from final
