-- One row per prediction within the detail window, and one per equipment and hour past it
-- (retention's roll-up): failure probability over time for charts. The roll-up rows carry the
-- hour's highest probability and lowest health score.
with predictions as (
    select * from {{ ref('stg_predictions') }}
),

hourly as (
    select * from {{ ref('stg_predictions_hourly') }}
),

final as (
    select
        predictions.equipment_id,
        predictions.ts,
        predictions.failure_probability,
        predictions.health_score,
        predictions.model_version,
        1 as predictions
    from predictions
    union all
    select
        hourly.equipment_id,
        hourly.hour as ts,  -- noqa: RF04
        hourly.max_probability as failure_probability,
        hourly.min_health_score as health_score,
        hourly.model_version,
        hourly.predictions
    from hourly
)

select * from final
