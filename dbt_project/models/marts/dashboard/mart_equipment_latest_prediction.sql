{{
    config(
        materialized='incremental',
        unique_key='equipment_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
        tags=['dashboard_state'],
        pre_hook="select pg_advisory_xact_lock(hashtext('{{ this }}'))",
    )
}}
-- One row per scored equipment: its latest prediction (newest feature row, newest scoring run
-- among equals), and when this row was last refreshed. The dashboard reads it instead of
-- searching every equipment's prediction history on every page load.
--
-- Incremental: only predictions written since the last refresh (less the lookback margin for
-- a scoring run that committed late) are compared with the one already known. Overlapping
-- refreshes wait for each other (a lock held to commit).
with predictions as (
    select * from {{ ref('stg_predictions') }}
    {% if is_incremental() %}
        where predicted_at > {{ refreshed_since(this) }}
    {% endif %}
),

candidates as (
    select
        prediction_id,
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
    from predictions
    {% if is_incremental() %}
        union all
        select
            prediction_id,
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
        from {{ this }}
        where equipment_id in (select predictions.equipment_id from predictions)
    {% endif %}
),

final as (
    select distinct on (equipment_id)
        prediction_id,
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
        explanation,
        now() as refreshed_at
    from candidates
    order by equipment_id asc, ts desc, predicted_at desc
)

select * from final
