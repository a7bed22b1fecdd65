{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['site', 'reading_hour'],
        indexes=[
            {'columns': ['site', 'reading_hour'], 'unique': True},
            {'columns': ['ingested_at']},
            {'columns': ['reading_hour']},
        ],
    )
}}
-- One row per site per UTC clock hour holding a reading: per sensor, the median over the site's
-- equipment of their hour mean, in their type's norm standard deviations. What the site's
-- weather and time of day do to every machine there; the feature table subtracts it, so that a
-- machine warming up faster than its neighbours stands out from a hot afternoon.
-- Incremental: the site hours whose equipment hours changed since the last run are recomputed,
-- except the newest clock hour, which is still filling every minute and which features read only
-- once it is over: it is stored as a placeholder (null levels and equipment_hours) and computed
-- on the first run that sees a later hour. Saves recomputing every site's median each minute.
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
    touched as (
        select
            equipment.site,
            hourly.reading_hour,
            max(hourly.ingested_at) as ingested_at
        from hourly
        inner join equipment on hourly.equipment_id = equipment.equipment_id
        where
            hourly.ingested_at > (
                select coalesce(max(known.ingested_at), '-infinity'::timestamptz)
                from {{ this }} as known
            ) - interval '{{ var("ingest_lookback_minutes") | int }} minutes'
        group by equipment.site, hourly.reading_hour
    ),

    pending as (
        -- Site hours an earlier run left unfinished: only ever the table's newest hour.
        select
            known.site,
            known.reading_hour,
            known.ingested_at
        from {{ this }} as known
        where
            known.equipment_hours is null
            and known.reading_hour = (select max(newest.reading_hour) from {{ this }} as newest)
    ),

    candidate_rows as (
        select * from touched
        union all
        select * from pending
    ),

    candidates as materialized (
        select
            site,
            reading_hour,
            max(ingested_at) as ingested_at,
            reading_hour < greatest(
                (select max(newest.reading_hour) from candidate_rows as newest),
                (select max(known.reading_hour) from {{ this }} as known)
            ) as is_over
        from candidate_rows
        group by site, reading_hour
    ),

    site_hours as (
        -- Every equipment hour of the site hours to compute: one index lookup per machine there.
        select
            hourly.*,
            equipment.site,
            equipment.equipment_type
        from candidates
        inner join equipment on candidates.site = equipment.site
        inner join hourly
            on
                equipment.equipment_id = hourly.equipment_id
                and candidates.reading_hour = hourly.reading_hour
        where candidates.is_over
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

computed as (
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
),

{% if is_incremental() %}
    placeholders as (
        -- The newest hour is still filling: its row holds the place until a later hour arrives.
        select
            site,
            reading_hour,
            {% for sensor in sensors() -%}
                null::double precision as {{ sensor }}_site_level,
            {% endfor -%}
            null::bigint as equipment_hours,
            ingested_at
        from candidates
        where not is_over
    ),
{% endif %}

final as (
    select * from computed
    {% if is_incremental() %}
        union all
        select * from placeholders
    {% endif %}
)

select * from final
