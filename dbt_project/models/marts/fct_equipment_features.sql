{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['equipment_id', 'ts'], 'unique': True},
            {'columns': ['ingested_at']},
        ],
        pre_hook=[
            "set local work_mem = '64MB'",
            "set local enable_mergejoin = {{ 'on' if is_incremental() else 'off' }}",
        ],
        post_hook="{{ record_feature_definitions() }}",
    )
}}
{%- set sensors = sensors() -%}
{%- set windows = window_hours() | sort -%}
{%- set longest = windows | last -%}
{%- set slots = (longest * 60 / (var("missing_slot_minutes") | int)) | int -%}
-- One row per equipment per reading timestamp: the reading, rolling-window statistics of every
-- catalog sensor over the trailing windows (t - w, t], deviations from the equipment's baseline
-- and its type's norm, the drift against the machines of its site (int_site_hourly_levels),
-- the share of missing readings and the time since maintenance.
-- Only readings at or before t are used.
--
-- Cost: with h the clock hour of t, each window (t - w, t] is three parts that merge:
--   the whole hours [h - (w - 1) h, h)  one pre-aggregated row each (int_sensor_readings_hourly),
--                                        merged once per equipment and hour of the new readings;
--   the readings of (t - w, h - (w - 1) h) and of [h, t]   two short index range scans.
-- A feature row therefore reads at most two hours of readings whatever the window, and an
-- incremental run touches only the new readings, their hour rows and their edges.
-- A full build turns merge joins off: the planner cannot see the row counts of the CTEs below,
-- and at some fleet sizes it merged whole_hours into the readings on equipment_id alone, with
-- the hour as a filter, rescanning every hour row of an equipment for each of its readings (200
-- equipment x 120 days ran for more than half an hour instead of 5 minutes). Incremental runs
-- hold an hour or two per equipment, where that plan is cheap and 15 % faster than hashing.
-- A full build records the feature definitions it ran (emps.transform.features_fingerprint) as
-- the table's comment: `emps up` rebuilds history computed by older definitions.
with readings as not materialized (
    select * from {{ ref('stg_sensor_readings') }}
),

equipment as not materialized (
    select * from {{ ref('stg_equipment') }}
),

first_readings as (
    select * from {{ ref('int_equipment_first_readings') }}
),

baselines as (
    select * from {{ ref('int_equipment_baselines') }}
),

site_baselines as (
    select * from {{ ref('int_equipment_site_baselines') }}
),

type_norms as (
    select * from {{ ref('int_equipment_type_norms') }}
),

maintenance_events as (
    select * from {{ ref('int_maintenance_events') }}
),

hourly as not materialized (
    select * from {{ ref('int_sensor_readings_hourly') }}
),

site_levels as not materialized (
    select * from {{ ref('int_site_hourly_levels') }}
),

targets as materialized (
    select
        readings.*,
        {{ clock_bucket('1 hour', 'readings.ts') }} as reading_hour
    from readings
    inner join equipment on readings.equipment_id = equipment.equipment_id
    {% if is_incremental() %}
        where
            readings.ingested_at > (
                select coalesce(max(done.ingested_at), '-infinity'::timestamptz)
                from {{ this }} as done
            ) - interval '{{ var("ingest_lookback_minutes") | int }} minutes'
            and not exists (
                select 1 from {{ this }} as done
                where done.equipment_id = readings.equipment_id and done.ts = readings.ts
            )
    {% elif var("features_since", none) %}
        where readings.ts >= '{{ var("features_since") }}'::timestamptz
    {% endif %}
),

target_hours as materialized (
    select distinct
        targets.equipment_id,
        targets.reading_hour
    from targets
),

target_equipment as materialized (
    -- The equipment of the new readings: its site and its type's norms.
    select
        type_norms.*,
        equipment.equipment_id,
        equipment.site
    from equipment
    left join type_norms on equipment.equipment_type = type_norms.equipment_type
    where equipment.equipment_id in (select target_hours.equipment_id from target_hours)
),

whole_hours as materialized (
    -- Per equipment and hour of new readings, the merged hour rows of each window's whole
    -- hours and the mean of the last day's hours against their site's level; lateral, so that
    -- each is an index range scan of the hour rows (and of the site's levels).
    select
        hours_stats.*,
        target_hours.equipment_id,
        target_hours.reading_hour
    from target_hours
    inner join target_equipment on target_hours.equipment_id = target_equipment.equipment_id
    cross join lateral (  -- noqa: ST05
        select
            {% for w in windows -%}
                {% for sensor in sensors -%}
                    {{ target.schema }}.emps_moments_merge(hours.{{ sensor }}_moments) filter (
                        where hours.reading_hour >= target_hours.reading_hour - interval '{{ w - 1 }} hours'
                    ) as {{ sensor }}_hours_state_{{ w }}h,
                    coalesce(sum(hours.{{ sensor }}_count) filter (
                        where hours.reading_hour >= target_hours.reading_hour - interval '{{ w - 1 }} hours'
                    ), 0) as {{ sensor }}_hours_count_{{ w }}h,
                    min(hours.{{ sensor }}_min) filter (
                        where hours.reading_hour >= target_hours.reading_hour - interval '{{ w - 1 }} hours'
                    ) as {{ sensor }}_hours_min_{{ w }}h,
                    max(hours.{{ sensor }}_max) filter (
                        where hours.reading_hour >= target_hours.reading_hour - interval '{{ w - 1 }} hours'
                    ) as {{ sensor }}_hours_max_{{ w }}h,
                {% endfor -%}
            {% endfor -%}
            {% for sensor in sensors -%}
                -- The whole clock hours of the last day before the row's hour (the site's
                -- level of the current hour is not known until the hour is over).
                avg({{ site_relative('hours', 'target_equipment', 'levels', sensor) }}) filter (
                    where hours.reading_hour >= target_hours.reading_hour - interval '{{ longest }} hours'
                ) as {{ sensor }}_site_relative_{{ longest }}h,
            {% endfor -%}
            coalesce(sum(hours.filled_slots) filter (
                where hours.reading_hour >= target_hours.reading_hour - interval '{{ longest - 1 }} hours'
            ), 0) as hours_filled_slots
        from hourly as hours
        left join site_levels as levels
            on
                target_equipment.site = levels.site
                and hours.reading_hour = levels.reading_hour
        where
            hours.equipment_id = target_hours.equipment_id
            and hours.reading_hour >= target_hours.reading_hour - interval '{{ longest }} hours'
            and hours.reading_hour < target_hours.reading_hour
    ) as hours_stats
),

windows as (
    -- Per target reading, one lateral subquery over short index range scans of that
    -- equipment's readings: its hour so far [h, t] (piece 0) and, per window w, the readings
    -- before the window's whole hours, (t - w, h - (w - 1) h) (piece w).
    select
        targets.*,
        pieces.*
    from targets
    cross join lateral (  -- noqa: ST05
        select
            {% for piece in [0] + windows -%}
                {% set suffix = '_current' if piece == 0 else '_edge_' ~ piece ~ 'h' -%}
                {% for sensor in sensors -%}
                    {{ target.schema }}.emps_moments(
                        piece_readings.{{ sensor }}, {{ hours_since_origin('piece_readings.ts') }}
                    ) filter (where piece_readings.piece = {{ piece }}) as {{ sensor }}{{ suffix }}_state,
                    count(piece_readings.{{ sensor }}) filter (
                        where piece_readings.piece = {{ piece }}
                    ) as {{ sensor }}{{ suffix }}_count,
                    min(piece_readings.{{ sensor }}) filter (
                        where piece_readings.piece = {{ piece }}
                    ) as {{ sensor }}{{ suffix }}_min,
                    max(piece_readings.{{ sensor }}) filter (
                        where piece_readings.piece = {{ piece }}
                    ) as {{ sensor }}{{ suffix }}_max,
                {% endfor -%}
            {% endfor -%}
            count(distinct piece_readings.slot) filter (where piece_readings.piece = 0) as current_filled_slots,
            -- Missing-rate slots start at a slot boundary: not the one holding t - longest.
            count(distinct piece_readings.slot) filter (
                where piece_readings.piece = {{ longest }} and piece_readings.slot > piece_readings.first_slot
            ) as edge_filled_slots
        from (
            {% for piece in [0] + windows -%}
                select
                    {{ piece }} as piece,
                    readings.ts,
                    {% for sensor in sensors -%}
                        readings.{{ sensor }},
                    {% endfor -%}
                    {{ clock_bucket(slot_width(), 'readings.ts') }} as slot,
                    {{ clock_bucket(slot_width(), "targets.ts - interval '" ~ longest ~ " hours'") }} as first_slot
                from readings
                where
                    readings.equipment_id = targets.equipment_id
                    {% if piece == 0 -%}
                        and readings.ts >= targets.reading_hour
                        and readings.ts <= targets.ts
                    {% else -%}
                        and readings.ts > targets.ts - interval '{{ piece }} hours'
                        and readings.ts < targets.reading_hour - interval '{{ piece - 1 }} hours'
                    {% endif -%}
                {% if not loop.last %}union all{% endif %}
            {% endfor -%}
        ) as piece_readings
    ) as pieces
),

merged as (
    select
        windows.equipment_id,
        windows.ts,
        windows.ingested_at,
        {% for sensor in sensors %}
            windows.{{ sensor }},
            {%- for w in windows %}
                float8_regr_combine(
                    float8_regr_combine(windows.{{ sensor }}_current_state, windows.{{ sensor }}_edge_{{ w }}h_state),
                    whole_hours.{{ sensor }}_hours_state_{{ w }}h
                ) as {{ sensor }}_state_{{ w }}h,
                windows.{{ sensor }}_current_count
                + windows.{{ sensor }}_edge_{{ w }}h_count
                + whole_hours.{{ sensor }}_hours_count_{{ w }}h as {{ sensor }}_count_{{ w }}h,
                least(
                    windows.{{ sensor }}_current_min,
                    windows.{{ sensor }}_edge_{{ w }}h_min,
                    whole_hours.{{ sensor }}_hours_min_{{ w }}h
                ) as {{ sensor }}_min_{{ w }}h,
                greatest(
                    windows.{{ sensor }}_current_max,
                    windows.{{ sensor }}_edge_{{ w }}h_max,
                    whole_hours.{{ sensor }}_hours_max_{{ w }}h
                ) as {{ sensor }}_max_{{ w }}h,
            {%- endfor %}
            whole_hours.{{ sensor }}_site_relative_{{ longest }}h,
        {% endfor %}
        windows.current_filled_slots
        + windows.edge_filled_slots
        + whole_hours.hours_filled_slots as filled_slots_{{ longest }}h
    from windows
    inner join whole_hours
        on
            windows.equipment_id = whole_hours.equipment_id
            and windows.reading_hour = whole_hours.reading_hour
),

features as (
    select
        merged.equipment_id,
        merged.ts,
        merged.ingested_at,
        {% for sensor in sensors %}
            merged.{{ sensor }},
            {%- for w in windows %}
                {{ moments_mean('merged.' ~ sensor ~ '_state_' ~ w ~ 'h') }} as {{ sensor }}_mean_{{ w }}h,
                {{ moments_std(
                    'merged.' ~ sensor ~ '_state_' ~ w ~ 'h', 'merged.' ~ sensor ~ '_count_' ~ w ~ 'h'
                ) }} as {{ sensor }}_std_{{ w }}h,
                merged.{{ sensor }}_min_{{ w }}h,
                merged.{{ sensor }}_max_{{ w }}h,
                {{ moments_slope('merged.' ~ sensor ~ '_state_' ~ w ~ 'h') }} as {{ sensor }}_slope_{{ w }}h,
            {%- endfor %}
            merged.{{ sensor }}_site_relative_{{ longest }}h,
        {% endfor %}
        merged.filled_slots_{{ longest }}h
    from merged
),

final as (
    select
        features.equipment_id,
        features.ts,
        equipment.equipment_type,
        equipment.site,
        {% for sensor in sensors %}
            features.{{ sensor }},
            {%- for w in windows %}
                features.{{ sensor }}_mean_{{ w }}h,
                features.{{ sensor }}_std_{{ w }}h,
                features.{{ sensor }}_min_{{ w }}h,
                features.{{ sensor }}_max_{{ w }}h,
                features.{{ sensor }}_slope_{{ w }}h,
            {%- endfor %}
            -- Deviations use the shortest window's mean, in standard deviations.
            case
                when features.ts >= baselines.baseline_end
                    then
                        (features.{{ sensor }}_mean_{{ windows[0] }}h - baselines.{{ sensor }}_baseline_mean)
                        / nullif(baselines.{{ sensor }}_baseline_std, 0)
            end as {{ sensor }}_dev_baseline,
            (features.{{ sensor }}_mean_{{ windows[0] }}h - type_norms.{{ sensor }}_norm_mean)
            / nullif(type_norms.{{ sensor }}_norm_std, 0) as {{ sensor }}_dev_fleet,
            -- The longest window's level against the equipment's own baseline, and its spread, in
            -- the type's norm standard deviations: one scale for every machine of a type (the
            -- baseline's own deviation depends on how the machine ran that first day).
            case
                when features.ts >= baselines.baseline_end
                    then
                        (features.{{ sensor }}_mean_{{ longest }}h - baselines.{{ sensor }}_baseline_mean)
                        / nullif(type_norms.{{ sensor }}_norm_std, 0)
            end as {{ sensor }}_drift_{{ longest }}h,
            features.{{ sensor }}_std_{{ longest }}h
            / nullif(type_norms.{{ sensor }}_norm_std, 0) as {{ sensor }}_spread_{{ longest }}h,
            -- The drift beyond what the site's weather does to all its machines: the whole hours
            -- of the last day, each against the site's median level, minus the same at baseline.
            case
                when features.ts >= baselines.baseline_end
                    then
                        features.{{ sensor }}_site_relative_{{ longest }}h
                        - site_baselines.{{ sensor }}_site_baseline
            end as {{ sensor }}_site_drift_{{ longest }}h,
        {% endfor %}
        -- Of the clock slots ending with the one holding ts, those since the equipment's first
        -- reading, at most the whole window.
        greatest(
            0.0,
            1.0 - features.filled_slots_{{ longest }}h::double precision / least(
                {{ slots }},
                date_part(
                    'epoch',
                    {{ clock_bucket(slot_width(), 'features.ts') }}
                    - {{ clock_bucket(slot_width(), 'first_readings.first_reading_at') }}
                ) / {{ (var("missing_slot_minutes") | int) * 60 }} + 1
            )
        ) as missing_rate_{{ longest }}h,
        date_part(
            'epoch',
            features.ts - greatest(
                last_service.serviced_at,
                case when equipment.commissioned_at <= features.ts then equipment.commissioned_at end,
                first_readings.first_reading_at
            )
        ) / 3600.0 as hours_since_maintenance,
        features.ingested_at
    from features
    inner join equipment on features.equipment_id = equipment.equipment_id
    left join first_readings on features.equipment_id = first_readings.equipment_id
    left join baselines on features.equipment_id = baselines.equipment_id
    left join site_baselines on features.equipment_id = site_baselines.equipment_id
    left join type_norms on equipment.equipment_type = type_norms.equipment_type
    left join lateral (
        select max(maintenance_events.serviced_at) as serviced_at
        from maintenance_events
        where
            maintenance_events.equipment_id = features.equipment_id
            and maintenance_events.serviced_at <= features.ts
    ) as last_service on true
)

select * from final
