{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['equipment_id', 'reading_hour'],
        indexes=[
            {'columns': ['equipment_id', 'reading_hour'], 'unique': True},
            {'columns': ['ingested_at']},
        ],
    )
}}
-- One row per equipment per UTC clock hour holding a reading: each sensor's moments state
-- (count, mean, centred sums for std and slope), min and max over the hour, and the number of
-- occupied missing-rate slots. The feature model merges these for the whole hours of its
-- windows instead of reading every reading again.
-- Incremental: the hours that received readings since the last run are recomputed from their
-- readings (late readings included), one index range scan per hour.
with readings as not materialized (
    select * from {{ ref('stg_sensor_readings') }}
),

{% if is_incremental() %}
    touched as (
        select distinct
            readings.equipment_id,
            {{ clock_bucket('1 hour', 'readings.ts') }} as reading_hour
        from readings
        where
            readings.ingested_at > (
                select coalesce(max(known.ingested_at), '-infinity'::timestamptz)
                from {{ this }} as known
            ) - interval '{{ var("ingest_lookback_minutes") | int }} minutes'
    ),

    final as (
        -- Lateral, so each hour is an index range scan of its equipment's readings.
        select
            hour_stats.*,
            touched.equipment_id,
            touched.reading_hour
        from touched
        cross join lateral (  -- noqa: ST05
            select {{ reading_stats('hour_readings') }}
            from readings as hour_readings
            where
                hour_readings.equipment_id = touched.equipment_id
                and hour_readings.ts >= touched.reading_hour
                and hour_readings.ts < touched.reading_hour + interval '1 hour'
        ) as hour_stats
    )
{% else %}
    final as (
        select
            hour_readings.equipment_id,
            {{ clock_bucket('1 hour', 'hour_readings.ts') }} as reading_hour,
            {{ reading_stats('hour_readings') }}
        from readings as hour_readings
        group by 1, 2
    )
{% endif %}

select * from final
