{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='equipment_id',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
{%- set windows = range(1, window_count() + 1) | list -%}
{%- set longest = 'w' ~ window_count() -%}
-- One row per equipment with slots: for its newest slot `slot`, the window sums over the slots
-- before it, (slot - w, slot - 1] for each window w (x in slots relative to `slot`), the site
-- sums of the longest window, and how many of those slots hold a reading.
-- The feature table adds the newest slot's own values to these: a slot's readings arrive over
-- several minutes and each recomputes its features, but the slots before it change only when
-- the equipment moves on to a new slot, or a late reading lands in one of them. Recomputing
-- these sums then, rather than on every reading, is what keeps an incremental run cheap.
with levels as not materialized (
    select * from {{ ref('int_slot_levels') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

site_levels as not materialized (
    select * from {{ ref('int_site_slot_levels') }}
),

{% if is_incremental() %}
    changed as (
        select
            equipment_id,
            max(slot) as newest,
            min(slot) as oldest,
            max(ingested_at) as ingested_at
        from levels
        where ingested_at > {{ watermark(this) }}
        group by equipment_id
    ),

    candidates as (
        -- A new newest slot, or a late reading in a slot before the one the sums are for.
        select
            changed.equipment_id,
            greatest(changed.newest, known.slot) as slot,
            greatest(changed.ingested_at, known.ingested_at) as ingested_at
        from changed
        left join {{ this }} as known on changed.equipment_id = known.equipment_id
        where
            known.equipment_id is null
            or changed.newest > known.slot
            or changed.oldest < known.slot
    ),
{% else %}
    candidates as (
        select
            equipment_id,
            max(slot) as slot,
            max(ingested_at) as ingested_at
        from levels
        group by equipment_id
    ),
{% endif %}

final as (
    select
        before_slot.*,
        candidates.equipment_id,
        candidates.slot,
        candidates.ingested_at
    from candidates
    inner join equipment on candidates.equipment_id = equipment.equipment_id
    cross join lateral (  -- noqa: ST05
        select
            {% for sensor in sensors() -%}
                {% for k in windows -%}
                    {{ window_sums(
                        sensor, k, 'context.' ~ sensor ~ '_level', '(context.slot - candidates.slot)',
                        'sum', filter='context.slot > candidates.slot - equipment.w' ~ k
                    ) }},
                {% endfor -%}
                count(context.{{ sensor }}_level - site.{{ sensor }}_site_level) as {{ sensor }}_site_n,
                sum(context.{{ sensor }}_level - site.{{ sensor }}_site_level) as {{ sensor }}_site_sum,
            {% endfor -%}
            count(*) as filled_slots
        from levels as context
        left join site_levels as site
            on
                equipment.axis = 'time'
                and equipment.site = site.site
                and equipment.slot_width = site.slot_width
                and context.slot = site.slot
        where
            context.equipment_id = candidates.equipment_id
            and context.slot > candidates.slot - equipment.{{ longest }}
            and context.slot < candidates.slot
    ) as before_slot
)

select * from final
