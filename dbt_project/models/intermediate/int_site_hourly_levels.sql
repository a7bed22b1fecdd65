{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['site', 'reading_hour'],
        indexes=[
            {'columns': ['site', 'reading_hour'], 'unique': True},
            {'columns': ['ingested_at']},
        ],
    )
}}
-- One row per site per UTC clock hour holding a reading: per sensor, the median over the site's
-- equipment of their hour mean, in their type's norm standard deviations. What the site's
-- weather and time of day do to every machine there; the feature table subtracts it, so that a
-- machine warming up faster than its neighbours stands out from a hot afternoon.
-- Incremental: the site hours whose equipment hours changed since the last run are recomputed.
with hourly as not materialized (
    select * from {{ ref('int_sensor_readings_hourly') }}
),

equipment as not materialized (
    select * from {{ ref('stg_equipment') }}
),

type_norms as (
    select * from {{ ref('int_equipment_type_norms') }}
),

{% if is_incremental() %}
    touched as materialized (
        select distinct
            equipment.site,
            hourly.reading_hour
        from hourly
        inner join equipment on hourly.equipment_id = equipment.equipment_id
        where
            hourly.ingested_at > (
                select coalesce(max(known.ingested_at), '-infinity'::timestamptz)
                from {{ this }} as known
            ) - interval '{{ var("ingest_lookback_minutes") | int }} minutes'
    ),

    site_hours as (
        -- Every equipment hour of the touched site hours: one index lookup per machine of the site.
        select
            hourly.*,
            equipment.site,
            equipment.equipment_type
        from touched
        inner join equipment on touched.site = equipment.site
        inner join hourly
            on
                equipment.equipment_id = hourly.equipment_id
                and touched.reading_hour = hourly.reading_hour
    ),
{% else %}
    site_hours as (
        select
            hourly.*,
            equipment.site,
            equipment.equipment_type
        from hourly
        inner join equipment on hourly.equipment_id = equipment.equipment_id
    ),
{% endif %}

final as (
    select
        site_hours.site,
        site_hours.reading_hour,
        {% for sensor in sensors() -%}
            percentile_cont(0.5) within group (
                order by {{ norm_level('site_hours', 'type_norms', sensor) }}
            ) as {{ sensor }}_site_level,
        {% endfor -%}
        count(*) as equipment_hours,
        max(site_hours.ingested_at) as ingested_at
    from site_hours
    inner join type_norms on site_hours.equipment_type = type_norms.equipment_type
    group by site_hours.site, site_hours.reading_hour
)

select * from final
