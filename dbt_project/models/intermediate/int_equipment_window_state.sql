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
-- sums of the longest window, how many of those slots hold a reading, and its trailing
-- baseline: the baseline period `reference_period` that slot is compared with (macros
-- baseline_period and reference_period: a period near a failure is skipped) and each sensor's
-- statistics over it (`<s>_trailing_mean|std`, `<s>_site_trailing`; macro baseline_stats).
-- The feature table adds the newest slot's own values to these: a slot's readings arrive over
-- several minutes and each recomputes its features, but the slots before it change only when
-- the equipment moves on to a new slot, or a late reading lands in one of them. Recomputing
-- these sums then, rather than on every reading, is what keeps an incremental run cheap; the
-- baseline period's statistics are carried over from the last run unless the new slot moved
-- to the next period or a late reading landed in it or before it (once a period per equipment
-- in the usual case, not once a slot).
with levels as not materialized (
    select * from {{ ref('int_slot_levels') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

site_levels as not materialized (
    select * from {{ ref('int_site_slot_levels') }}
),

skips as (
    select * from {{ ref('int_equipment_baseline_skips') }}
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
            changed.oldest as changed_from,
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
            null::bigint as changed_from,
            max(slot) as slot,
            max(ingested_at) as ingested_at
        from levels
        group by equipment_id
    ),
{% endif %}

targets as (
    select
        candidates.*,
        equipment.axis,
        equipment.site,
        equipment.slot_width,
        equipment.baseline_slots,
        equipment.baseline_min_slots,
        {% for k in windows -%}
            equipment.w{{ k }},
        {% endfor -%}
        {{ reference_period('candidates.slot', 'equipment') }} as reference_period
    from candidates
    inner join equipment on candidates.equipment_id = equipment.equipment_id
    {{ skip_join('candidates.slot', 'equipment', 'candidates.equipment_id') }}
),

final as (
    select
        before_slot.*,
        {% for sensor in sensors() -%}
            {% for stat in [sensor ~ '_trailing_mean', sensor ~ '_trailing_std', sensor ~ '_site_trailing'] -%}
                {% if is_incremental() -%}
                    case when carried.equipment_id is null then reference.{{ stat }} else carried.{{ stat }} end
                        as {{ stat }},
                {% else -%}
                    reference.{{ stat }},
                {% endif -%}
            {% endfor -%}
        {% endfor -%}
        targets.reference_period,
        targets.equipment_id,
        targets.slot,
        targets.ingested_at
    from targets
    cross join
        lateral (  -- noqa: ST05
            select
                {% for sensor in sensors() -%}
                    {{ slot_window_sums(sensor) }}
                    count(context.{{ sensor }}_level - site.{{ sensor }}_site_level) as {{ sensor }}_site_n,
                    sum(context.{{ sensor }}_level - site.{{ sensor }}_site_level) as {{ sensor }}_site_sum,
                {% endfor -%}
                count(*) as filled_slots
            {{ levels_with_site() }}
            where
                context.equipment_id = targets.equipment_id
                and context.slot > targets.slot - targets.{{ longest }}
                and context.slot < targets.slot
        ) as before_slot
    {% if is_incremental() -%}
        -- The baseline period's statistics as the last run left them, while no reading of this
        -- run lies in the period or before it.
        left join {{ this }} as carried
            on
                targets.equipment_id = carried.equipment_id
                and targets.reference_period = carried.reference_period
                and targets.changed_from >= (carried.reference_period + 1) * targets.baseline_slots
    {% endif -%}
    cross join
        lateral (  -- noqa: ST05
            -- Otherwise the period's slots: one index range scan.
            select
                {{ trailing_stats() }}
            {{ levels_with_site() }}
            where
                {{ in_reference_period() }}  -- noqa: LT02
                {%- if is_incremental() %}
                    and carried.equipment_id is null
                {%- endif %}
        ) as reference
)

select * from final
