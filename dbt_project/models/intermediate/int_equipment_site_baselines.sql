{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
-- One row per equipment whose baseline period is over: per sensor, its level against its
-- site's median machine (int_site_hourly_levels), averaged over the whole clock hours inside
-- the baseline period. The feature table's site drift is the last day's same measure minus this.
-- Computed once, when the baseline is (the same run builds the site's levels first).
with baselines as (
    select * from {{ ref('int_equipment_baselines') }}
),

equipment as not materialized (
    select * from {{ ref('stg_equipment') }}
),

type_norms as (
    select * from {{ ref('int_equipment_type_norms') }}
),

hourly as not materialized (
    select * from {{ ref('int_sensor_readings_hourly') }}
),

site_levels as not materialized (
    select * from {{ ref('int_site_hourly_levels') }}
),

candidates as (
    select
        baselines.equipment_id,
        baselines.first_reading_at,
        baselines.baseline_end
    from baselines
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as known
            where known.equipment_id = baselines.equipment_id
        )
    {% endif %}
),

final as (
    select
        candidates.equipment_id,
        {% for sensor in sensors() -%}
            avg({{ site_relative('hours', 'type_norms', 'levels', sensor) }}) as {{ sensor }}_site_baseline,
        {% endfor -%}
        count(*) as baseline_hours
    from candidates
    inner join equipment on candidates.equipment_id = equipment.equipment_id
    inner join type_norms on equipment.equipment_type = type_norms.equipment_type
    inner join hourly as hours
        on
            candidates.equipment_id = hours.equipment_id
            and hours.reading_hour >= {{ clock_bucket('1 hour', 'candidates.first_reading_at') }}
            and hours.reading_hour + interval '1 hour' <= candidates.baseline_end
    inner join site_levels as levels
        on
            equipment.site = levels.site
            and hours.reading_hour = levels.reading_hour
    group by candidates.equipment_id
)

select * from final
