{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['equipment_id', 'slot'],
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['equipment_id', 'slot'], 'unique': True},
            {'columns': ['equipment_id', 'ts']},
            {'columns': ['ingested_at']},
        ],
        pre_hook=[
            "set local work_mem = '256MB'",
            "set local enable_nestloop = {{ 'on' if is_incremental() else 'off' }}",
        ],
        post_hook="{{ record_feature_definitions() }}",
    )
}}
{%- set windows = range(1, window_count() + 1) | list -%}
{%- set longest = 'w' ~ window_count() -%}
{#- An incremental run with few new slots reads each one's window by index (lateral path); a
    full build, or a run after a large import, runs moving window frames over the slots in
    order (window path): O(1) per slot and window instead of a lookup per slot. -#}
{%- set path = 'window' -%}
{%- if is_incremental() and execute -%}
    {%- set pending_query -%}
        select count(*) from {{ ref('int_slot_levels') }} as levels
        where {{ not_built_yet('levels') }}
    {%- endset -%}
    {%- if run_query(pending_query).columns[0].values()[0] <= var('feature_lateral_max_slots') | int -%}
        {%- set path = 'lateral' -%}
    {%- endif -%}
{%- endif -%}
-- One row per equipment per slot of its type's grid holding a reading (`ts`: the slot's last
-- reading), with the model's features (emps.catalog.Catalog.feature_names):
--   per sensor s, from its slot levels (int_slot_levels: norm standard deviations from its
--   type's and regime's norm): `s_now` (this slot), per window k over the slots (slot - w_k,
--   slot]: `s_mean_wk`, `s_std_wk` (n - 1), `s_slope_wk` (per clock unit: hour or counter
--   unit), `s_outside_wk` (share of slots beyond var outside_sigmas); `s_dev_lag` (the
--   shortest window's mean against the machine's baseline, in baseline standard deviations),
--   `s_drift_lag` (the longest window's mean minus the baseline mean), `s_site_drift_lag` (the
--   longest window's mean level against its site's median machine, before this slot, minus the
--   same over the baseline: wall-time equipment with a site). The baseline trails the machine
--   where its type has a `baseline_lag`: its levels over the last whole baseline period (slots
--   counted in periods of `baseline` slots from slot 0) that ends `baseline_lag` or more slots
--   before the row's (macro baseline_period) and that no failure's horizon or repair touches
--   (int_equipment_baseline_skips: else the period before those), and its first `baseline`
--   slots (int_equipment_baselines) while that period starts before its first slot. So sensor
--   wander and a replaced sensor's offset fade out of these features after a lag instead of
--   adding up over the machine's life, and a fault before an earlier failure is not taken for
--   the healthy level. A type without a lag keeps its first span;
--   `missing_rate` (share of the longest window's slots without a reading, counted from the
--   first slot), `since_maintenance` (clock units since the last service, commissioning or
--   first reading) and `baseline_age` (clock units from the last slot of the span the baseline
--   features compare with to this one: under the lag on a young machine still compared with
--   its first span, at least the lag once it trails, so the model tells the two apart).
-- Only slots at or before the row's are used; baseline features only once the baseline is over.
-- Cost: in the lateral path, a new reading in an equipment's newest slot adds that slot's values
-- to the sums over the slots before it (int_equipment_window_state, recomputed when the
-- equipment moves to a new slot, with its baseline period's statistics): one lookup; any other
-- slot reads its window's slot rows and its baseline period's (two index range scans). The
-- window path sorts the slots once and keeps running sums per frame, and groups the slots of
-- the baseline periods its rows are compared with (never more than the newest one's).
with levels as not materialized (
    select * from {{ ref('int_slot_levels') }}
),

grids as (
    select * from {{ ref('int_equipment_grids') }}
),

first_readings as (
    select * from {{ ref('int_equipment_first_readings') }}
),

baselines as (
    select * from {{ ref('int_equipment_baselines') }}
),

equipment as (
    -- Per equipment: its grid, first slot and baseline, joined once here (each feature row
    -- carries them through the windows) rather than once per feature row at the end.
    select
        grids.*,
        first_readings.first_slot,
        first_readings.first_reading_at,
        {% for sensor in sensors() -%}
            baselines.{{ sensor }}_baseline_mean,
            baselines.{{ sensor }}_baseline_std,
            baselines.{{ sensor }}_site_baseline,
        {% endfor -%}
        baselines.baseline_end_slot
    from grids
    left join first_readings on grids.equipment_id = first_readings.equipment_id
    left join baselines on grids.equipment_id = baselines.equipment_id
),

site_levels as not materialized (
    select * from {{ ref('int_site_slot_levels') }}
),

maintenance_events as (
    select * from {{ ref('int_maintenance_events') }}
),

service_spans as (
    -- Each service until the next: a feature row's last service is the span holding its time.
    select
        equipment_id,
        serviced_at,
        lead(serviced_at) over (partition by equipment_id order by serviced_at) as next_service_at
    from maintenance_events
),

state as not materialized (
    select * from {{ ref('int_equipment_window_state') }}
),

skips as (
    select * from {{ ref('int_equipment_baseline_skips') }}
),

{% if path == 'lateral' %}
    targets as materialized (
        select
            equipment.*,
            levels.slot,
            levels.ts,
            {% for sensor in sensors() -%}
                levels.{{ sensor }}_level,
            {% endfor -%}
            levels.ingested_at,
            last_service.serviced_at as last_serviced_at,
            {{ reference_period('levels.slot', 'equipment') }} as reference_period
        from levels
        inner join equipment on levels.equipment_id = equipment.equipment_id
        {{ last_service_join('levels') }}
        {{ skip_join('levels.slot', 'equipment', 'levels.equipment_id') }}
        where {{ not_built_yet('levels') }}
    ),

    newest as (
        -- The equipment's newest slot: the sums over the slots before it are kept in
        -- int_equipment_window_state; its own values are added here.
        select
            targets.*,
            {% for sensor in sensors() -%}
                {%- set z = 'targets.' ~ sensor ~ '_level' -%}
                {% for k in windows -%}
                    coalesce(state.{{ sensor }}_n_w{{ k }}, 0)
                    + ({{ z }} is not null)::int as {{ sensor }}_n_w{{ k }},
                    coalesce(state.{{ sensor }}_sz_w{{ k }}, 0) + coalesce({{ z }}, 0) as {{ sensor }}_sz_w{{ k }},
                    coalesce(state.{{ sensor }}_szz_w{{ k }}, 0)
                    + coalesce({{ z }} * {{ z }}, 0) as {{ sensor }}_szz_w{{ k }},
                    -- The slot's own position is 0: it adds nothing to the x sums.
                    coalesce(state.{{ sensor }}_sx_w{{ k }}, 0) as {{ sensor }}_sx_w{{ k }},
                    coalesce(state.{{ sensor }}_sxx_w{{ k }}, 0) as {{ sensor }}_sxx_w{{ k }},
                    coalesce(state.{{ sensor }}_sxz_w{{ k }}, 0) as {{ sensor }}_sxz_w{{ k }},
                    coalesce(state.{{ sensor }}_so_w{{ k }}, 0)
                    + (coalesce(abs({{ z }}), 0) > {{ var('outside_sigmas') }})::int as {{ sensor }}_so_w{{ k }},
                {% endfor -%}
                state.{{ sensor }}_site_n,
                state.{{ sensor }}_site_sum,
            {% endfor -%}
            state.filled_slots + 1 as filled_slots,
            {% for sensor in sensors() -%}
                state.{{ sensor }}_trailing_mean,
                state.{{ sensor }}_trailing_std,
                state.{{ sensor }}_site_trailing{% if not loop.last %},{% endif %}
            {% endfor -%}
        from targets
        inner join state
            on
                targets.equipment_id = state.equipment_id
                and targets.slot = state.slot
    ),

    older as (
        -- Any other slot (a late reading in an earlier one): one lateral subquery over its
        -- equipment's slots of the longest window (an index range scan), each window's sums
        -- filtered out of it.
        select
            targets.*,
            window_rows.*,
            reference.*
        from targets
        cross join
            lateral (  -- noqa: ST05
                select
                    {% for sensor in sensors() -%}
                        {{ slot_window_sums(sensor) }}
                        count(context.{{ sensor }}_level - site.{{ sensor }}_site_level) filter (
                            where context.slot < targets.slot
                        ) as {{ sensor }}_site_n,
                        sum(context.{{ sensor }}_level - site.{{ sensor }}_site_level) filter (
                            where context.slot < targets.slot
                        ) as {{ sensor }}_site_sum,
                    {% endfor -%}
                    count(*) as filled_slots
                {{ levels_with_site() }}
                where
                    context.equipment_id = targets.equipment_id
                    and context.slot > targets.slot - targets.{{ longest }}
                    and context.slot <= targets.slot
            ) as window_rows
        cross join
            lateral (  -- noqa: ST05
                select
                    {{ trailing_stats() }}
                {{ levels_with_site() }}
                where {{ in_reference_period() }}
            ) as reference
        where not exists (
            select 1 from state
            where
                state.equipment_id = targets.equipment_id
                and state.slot = targets.slot
        )
    ),

    sums as (
        select * from newest
        union all
        select * from older
    ),
{% else %}
    {% if is_incremental() %}
        pending_slots as (
            -- After a large import: each equipment's slots from its earliest new one are rebuilt.
            select
                equipment_id,
                min(slot) as from_slot
            from levels
            where {{ not_built_yet('levels') }}
            group by equipment_id
        ),

        pending as (
            -- With the first baseline period those rows are compared with.
            select
                pending_slots.*,
                {{ reference_period('pending_slots.from_slot', 'equipment') }} as from_period
            from pending_slots
            inner join equipment on pending_slots.equipment_id = equipment.equipment_id
            {{ skip_join('pending_slots.from_slot', 'equipment', 'pending_slots.equipment_id') }}
        ),
    {% endif %}

    source as (
        select
            equipment.*,
            levels.slot,
            levels.ts,
            {% for sensor in sensors() -%}
                levels.{{ sensor }}_level,
                levels.{{ sensor }}_level - site.{{ sensor }}_site_level as {{ sensor }}_site_relative,
            {% endfor -%}
            levels.ingested_at,
            last_service.serviced_at as last_serviced_at,
            {% if is_incremental() -%}
                pending.from_slot,
            {% endif -%}
            (levels.slot - min(levels.slot) over (partition by levels.equipment_id))::float8 as x
        from levels
        inner join equipment on levels.equipment_id = equipment.equipment_id
        {% if is_incremental() -%}
            inner join pending
                on
                    levels.equipment_id = pending.equipment_id
                    and levels.slot > pending.from_slot - equipment.{{ longest }}
        {% endif -%}
        left join site_levels as site
            on
                equipment.axis = 'time'
                and equipment.site = site.site
                and equipment.slot_width = site.slot_width
                and levels.slot = site.slot
        {{ last_service_join('levels') }}
        {% if not is_incremental() and var("features_since", none) -%}
            -- A partial rebuild: rows from features_since on, and the slots their windows read.
            where
                equipment.axis != 'time'
                or levels.slot > {{ since_slot('equipment') }} - equipment.{{ longest }}
        {%- endif %}
    ),

    {% for group in window_groups() %}
        {%- set group_index = loop.index %}
        sums_{{ group_index }} as (
            -- The types whose windows are {{ group | join(', ') }} slots.
            select
                source.*,
                {% for sensor in sensors() -%}
                    {% for k in windows -%}
                        {{ window_sums(
                            sensor, k, 'source.' ~ sensor ~ '_level', 'source.x',
                            target.schema ~ '.emps_msum', over='w' ~ k
                        ) }},
                    {% endfor -%}
                    -- The site sums are over the longest window before the slot: its frame less
                    -- the slot itself (one frame fewer to run).
                    count(source.{{ sensor }}_site_relative) over {{ longest }}
                    - (source.{{ sensor }}_site_relative is not null)::int as {{ sensor }}_site_n,
                    {{ target.schema }}.emps_msum(source.{{ sensor }}_site_relative) over {{ longest }}
                    - coalesce(source.{{ sensor }}_site_relative, 0) as {{ sensor }}_site_sum,
                {% endfor -%}
                count(*) over {{ longest }} as filled_slots
            from source
            where
                {% for k in windows -%}
                    source.w{{ k }} = {{ group[k - 1] }}{% if not loop.last %} and {% endif %}
                {%- endfor %}
            window
                {% for k in windows -%}
                    w{{ k }} as (
                        partition by source.equipment_id order by source.slot
                        range between {{ group[k - 1] - 1 }} preceding and current row
                    ){% if not loop.last %},{% endif %}
                {% endfor -%}
        ),
    {% endfor %}

    frames as (
        {% for group in window_groups() -%}
            select * from sums_{{ loop.index }}
            {% if is_incremental() -%}
                where slot >= from_slot
            {% elif var("features_since", none) -%}
                where ts >= '{{ var("features_since") }}'::timestamptz
            {% endif -%}
            {% if not loop.last %}union all{% endif %}
        {% endfor -%}
    ),

    periods as (
        -- The baseline periods the rows above are compared with, from the first one's to the
        -- equipment's newest slot's (int_equipment_window_state): their slots, grouped.
        select
            levels.equipment_id,
            floor(levels.slot::float8 / equipment.baseline_slots)::bigint as period,
            {% for sensor in sensors() -%}
                {{ baseline_stats(
                    sensor, 'levels.' ~ sensor ~ '_level',
                    'levels.' ~ sensor ~ '_level - site.' ~ sensor ~ '_site_level',
                    'min(equipment.baseline_min_slots)', name='trailing'
                ) }}{% if not loop.last %},{% endif %}
            {% endfor -%}
        from levels
        inner join equipment on levels.equipment_id = equipment.equipment_id
        inner join state
            on
                levels.equipment_id = state.equipment_id
                and levels.slot < (state.reference_period + 1) * equipment.baseline_slots
        {% if is_incremental() -%}
            inner join pending
                on
                    levels.equipment_id = pending.equipment_id
                    and levels.slot >= pending.from_period * equipment.baseline_slots
        {% endif -%}
        left join site_levels as site
            on
                equipment.axis = 'time'
                and equipment.site = site.site
                and equipment.slot_width = site.slot_width
                and levels.slot = site.slot
        {% if not is_incremental() and var("features_since", none) -%}
            {{ skip_join(since_slot('equipment'), 'equipment', 'levels.equipment_id', 'since_skip') }}
            where
                equipment.axis != 'time'
                or levels.slot >= {{ reference_period(since_slot('equipment'), 'equipment', 'since_skip') }}
                * equipment.baseline_slots
        {%- endif %}
        -- The expression, not its name: a joined skip row has a `period` column of its own,
        -- which GROUP BY would take first.
        group by levels.equipment_id, floor(levels.slot::float8 / equipment.baseline_slots)::bigint
    ),

    sums as (
        select
            frames.*,
            {% for sensor in sensors() -%}
                periods.{{ sensor }}_trailing_mean,
                periods.{{ sensor }}_trailing_std,
                periods.{{ sensor }}_site_trailing,
            {% endfor -%}
            {{ reference_period('frames.slot', 'frames') }} as reference_period
        from frames
        {{ skip_join('frames.slot', 'frames', 'frames.equipment_id') }}
        left join periods
            on
                frames.equipment_id = periods.equipment_id
                and {{ reference_period('frames.slot', 'frames') }} = periods.period
    ),
{% endif %}

stats as (
    select
        sums.equipment_id,
        sums.slot,
        sums.ts,
        sums.equipment_type,
        sums.site,
        sums.commissioned_at,
        sums.unit_seconds,
        sums.first_slot,
        sums.first_reading_at,
        sums.baseline_end_slot,
        sums.last_serviced_at,
        sums.{{ longest }} as longest_slots,
        {% for sensor in sensors() -%}
            {%- set trailing = is_trailing('sums.reference_period', 'sums') -%}
            {% for stat in ['_baseline_mean', '_baseline_std', '_site_baseline'] -%}
                case
                    when {{ trailing }} then sums.{{ sensor ~ stat | replace('baseline', 'trailing') }}
                    else sums.{{ sensor ~ stat }}
                end as {{ sensor ~ stat }},
            {% endfor -%}
            sums.{{ sensor }}_level as {{ sensor }}_now,
            {% for k in windows -%}
                {{ window_stats('sums', sensor, k, 'sums.slot_units') }},
            {% endfor -%}
            case
                when sums.{{ sensor }}_site_n > 0 then sums.{{ sensor }}_site_sum / sums.{{ sensor }}_site_n
            end as {{ sensor }}_site_relative,
        {% endfor -%}
        -- The last slot of the span the baseline features compare with.
        case
            when {{ is_trailing('sums.reference_period', 'sums') }}
                then (sums.reference_period + 1) * sums.baseline_slots - 1
            else sums.baseline_end_slot - 1
        end as reference_end_slot,
        sums.slot_units,
        sums.filled_slots,
        sums.ingested_at
    from sums
),

final as (
    select
        stats.equipment_id,
        stats.slot,
        stats.ts,
        stats.equipment_type,
        stats.site,
        {% for sensor in sensors() %}
            stats.{{ sensor }}_now,
            {%- for k in windows %}
                stats.{{ sensor }}_mean_w{{ k }},
                stats.{{ sensor }}_std_w{{ k }},
                stats.{{ sensor }}_slope_w{{ k }},
                stats.{{ sensor }}_outside_w{{ k }},
            {%- endfor %}
            case
                when stats.slot >= stats.baseline_end_slot
                    then
                        (stats.{{ sensor }}_mean_w1 - stats.{{ sensor }}_baseline_mean)
                        / nullif(stats.{{ sensor }}_baseline_std, 0)
            end as {{ sensor }}_dev_lag,
            case
                when stats.slot >= stats.baseline_end_slot
                    then stats.{{ sensor }}_mean_{{ longest }} - stats.{{ sensor }}_baseline_mean
            end as {{ sensor }}_drift_lag,
            case
                when stats.slot >= stats.baseline_end_slot
                    then stats.{{ sensor }}_site_relative - stats.{{ sensor }}_site_baseline
            end as {{ sensor }}_site_drift_lag,
        {% endfor %}
        greatest(
            0.0,
            1.0 - stats.filled_slots::float8
            / greatest(1, least(stats.longest_slots, stats.slot - stats.first_slot + 1))
        ) as missing_rate,
        date_part(
            'epoch',
            stats.ts - greatest(
                stats.last_serviced_at,
                case when stats.commissioned_at <= stats.ts then stats.commissioned_at end,
                stats.first_reading_at
            )
        ) / stats.unit_seconds as since_maintenance,
        case
            when stats.slot >= stats.baseline_end_slot
                then (stats.slot - stats.reference_end_slot) * stats.slot_units
        end as baseline_age,
        stats.ingested_at
    from stats
)

select * from final
