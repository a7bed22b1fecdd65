-- One row per prediction the scoring flow wrote (equipment per scored feature row).
with source as (
    select * from {{ source('ops', 'predictions') }}
),

final as (
    select
        id as prediction_id,
        equipment_id,
        ts,
        predicted_at,
        failure_probability,
        health_score,
        severity,
        days_until_failure,
        remaining_life,
        life_unit,
        remaining_life_beyond,
        assessment,
        assessment_reason,
        model_version,
        explanation
    from source
)

select * from final
