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

-- A new prediction replaces the kept one only when it scored a newer feature row, or the same
-- one in a later run: a backlog scored late leaves the row as it is.
newer as (
    select predictions.*
    from predictions
    {% if is_incremental() %}
        left join {{ this }} as known on predictions.equipment_id = known.equipment_id
        where
            known.equipment_id is null
            or (predictions.ts, predictions.predicted_at) > (known.ts, known.predicted_at)
    {% endif %}
),

final as (
    select distinct on (newer.equipment_id)
        newer.*,
        now() as refreshed_at
    from newer
    order by newer.equipment_id asc, newer.ts desc, newer.predicted_at desc
)

select * from final
