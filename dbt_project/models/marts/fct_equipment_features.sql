{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['equipment_id', 'ts'], 'unique': True},
            {'columns': ['ingested_at']},
        ],
        pre_hook="set local work_mem = '64MB'",
    )
}}
{%- set sensors = sensors() -%}
{%- set windows = window_hours() | sort -%}
{%- set longest = windows | last -%}
{%- set slot_seconds = (var("missing_slot_minutes") | int) * 60 -%}
{%- set slots = (longest * 3600 / slot_seconds) | round(0, 'ceil') | int -%}
-- One row per equipment per reading timestamp: the reading, rolling-window statistics of every
-- catalog sensor over the trailing windows (t - w, t], deviations from the equipment's baseline
-- and its type's norm, the share of missing readings and the time since maintenance.
-- Only readings at or before t are used.
--
-- Cost: each new reading is joined to the readings of its longest window and every joined row
-- is aggregated once, into the band of the shortest window that holds it; the bands are then
-- merged into nested windows. An incremental run therefore touches only the new readings and
-- their lookback, never the history.
-- Import CTEs are inlined: each is used twice, and the filters must reach the raw index.
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

type_norms as (
    select * from {{ ref('int_equipment_type_norms') }}
),

maintenance_events as (
    select * from {{ ref('int_maintenance_events') }}
),

targets as materialized (
    select readings.*
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

windows as (
    -- Per target reading, inside a lateral subquery so that its lookback is always an index
    -- range scan of that equipment's readings (the planner cannot know how few targets an
    -- incremental run has, and would otherwise hash-join the whole history):
    -- 1. each lookback reading falls in the band of the shortest window holding it;
    -- 2. one aggregate state per band and sensor;
    -- 3. each window merges the states of the bands up to its length.
    select
        targets.*,
        target_windows.*
    from targets
    -- A CTE cannot be lateral: the subquery is the point here.
    cross join lateral (  -- noqa: ST05
        select
            {% for sensor in sensors %}
                {%- for w in windows %}
                    {{ target.schema }}.emps_moments_merge(band_stats.{{ sensor }}_moments) filter (
                        where band_stats.window_band <= {{ w }}
                    ) as {{ sensor }}_state_{{ w }}h,
                    min(band_stats.{{ sensor }}_min) filter (
                        where band_stats.window_band <= {{ w }}
                    ) as {{ sensor }}_min_{{ w }}h,
                    max(band_stats.{{ sensor }}_max) filter (
                        where band_stats.window_band <= {{ w }}
                    ) as {{ sensor }}_max_{{ w }}h,
                {%- endfor %}
            {% endfor %}
            bit_count(bit_or(band_stats.filled_slots)) as filled_slots_{{ longest }}h
        from (
            select
                window_rows.window_band,
                {% for sensor in sensors -%}
                    {{ target.schema }}.emps_moments(
                        window_rows.{{ sensor }}, window_rows.hours_from_ts
                    ) as {{ sensor }}_moments,
                    min(window_rows.{{ sensor }}) as {{ sensor }}_min,
                    max(window_rows.{{ sensor }}) as {{ sensor }}_max,
                {% endfor -%}
                bit_or(window_rows.slot_bit) as filled_slots
            from (
                select
                    case
                        {% for w in windows -%}
                            when lookback.ts > targets.ts - interval '{{ w }} hours' then {{ w }}
                        {% endfor -%}
                    end as window_band,
                    date_part('epoch', lookback.ts - targets.ts) / 3600.0 as hours_from_ts,
                    {% for sensor in sensors -%}
                        lookback.{{ sensor }},
                    {% endfor -%}
                    -- One bit per missing-rate slot that holds this reading.
                    1::bit({{ slots }}) << floor(
                        date_part('epoch', targets.ts - lookback.ts) / {{ slot_seconds }}
                    )::integer as slot_bit
                from readings as lookback
                where
                    lookback.equipment_id = targets.equipment_id
                    and lookback.ts > targets.ts - interval '{{ longest }} hours'
                    and lookback.ts <= targets.ts
            ) as window_rows
            group by window_rows.window_band
        ) as band_stats
    ) as target_windows
),

features as (
    select
        windows.equipment_id,
        windows.ts,
        windows.ingested_at,
        {% for sensor in sensors %}
            windows.{{ sensor }},
            {%- for w in windows %}
                {{ moments_mean('windows.' ~ sensor ~ '_state_' ~ w ~ 'h') }} as {{ sensor }}_mean_{{ w }}h,
                {{ moments_std('windows.' ~ sensor ~ '_state_' ~ w ~ 'h') }} as {{ sensor }}_std_{{ w }}h,
                windows.{{ sensor }}_min_{{ w }}h,
                windows.{{ sensor }}_max_{{ w }}h,
                {{ moments_slope('windows.' ~ sensor ~ '_state_' ~ w ~ 'h') }} as {{ sensor }}_slope_{{ w }}h,
            {%- endfor %}
        {% endfor %}
        windows.filled_slots_{{ longest }}h
    from windows
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
        {% endfor %}
        -- Slots expected since the equipment's first reading, at most the whole window.
        greatest(
            0.0,
            1.0 - features.filled_slots_{{ longest }}h::double precision / least(
                {{ slots }},
                floor(date_part('epoch', features.ts - first_readings.first_reading_at) / {{ slot_seconds }}) + 1
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
