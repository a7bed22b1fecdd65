-- One row per equipment and hour: predictions past the detail window, rolled up by retention.
with source as (
    select * from {{ source('ops', 'predictions_hourly') }}
),

final as (
    select
        equipment_id,
        hour,
        predictions,
        mean_probability,
        max_probability,
        min_health_score,
        worst_severity,
        last_ts,
        model_version
    from source
)

select * from final
