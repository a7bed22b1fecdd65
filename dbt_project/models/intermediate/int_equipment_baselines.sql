{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
    )
}}
-- One row per equipment whose baseline period is complete: the mean and standard deviation of
-- each sensor over its first `baseline_hours` of data, taken as its healthy state.
-- A feature row uses the baseline only when it is later than baseline_end (no future data).
with first_readings as (
    select * from {{ ref('int_equipment_first_readings') }}
),

-- Inlined: used twice, and its filters must reach the raw table\'s index.
readings as not materialized (
    select * from {{ ref('stg_sensor_readings') }}
),

candidates as (
    select
        first_readings.equipment_id,
        first_readings.first_reading_at,
        first_readings.first_reading_at
        + interval '{{ var("baseline_hours") | int }} hours' as baseline_end
    from first_readings
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as known
            where known.equipment_id = first_readings.equipment_id
        )
    {% endif %}
),

complete as (
    -- The period is over once a reading at or after its end has arrived.
    select candidates.*
    from candidates
    where exists (
        select 1 from readings
        where
            readings.equipment_id = candidates.equipment_id
            and readings.ts >= candidates.baseline_end
    )
),

final as (
    -- Lateral, so each equipment's baseline period is one index range scan (a join would let
    -- the planner hash the whole readings table when it overestimates the candidates).
    select
        baseline.*,
        complete.equipment_id,
        complete.first_reading_at,
        complete.baseline_end
    from complete
    inner join
        lateral (
            select
                {% for sensor in sensors() -%}
                    avg(readings.{{ sensor }}) as {{ sensor }}_baseline_mean,
                    stddev_samp(readings.{{ sensor }}) as {{ sensor }}_baseline_std,
                {% endfor -%}
                count(*) as baseline_readings
            from readings
            where
                readings.equipment_id = complete.equipment_id
                and readings.ts >= complete.first_reading_at
                and readings.ts < complete.baseline_end
        ) as baseline
        on baseline.baseline_readings >= {{ var("baseline_min_readings") | int }}
)

select * from final
