{{
    config(
        materialized='incremental',
        unique_key='equipment_id',
        incremental_strategy='delete+insert',
        indexes=[{'columns': ['equipment_id'], 'unique': True}],
        tags=['dashboard_state'],
        pre_hook="select pg_advisory_xact_lock(hashtext('{{ this }}'))",
    )
}}
-- One row per equipment that has reported: the time of its newest reading, and when this row
-- was last refreshed. The dashboard reads it instead of searching the whole reading history
-- of every equipment on every page load.
--
-- Incremental: only readings ingested since the last refresh (less the lookback margin for
-- batches a concurrent ingest committed late) are read; a late reading older than the one
-- already known never moves last_reading_at back. The build after each ingest and the refresh
-- after each scoring run may overlap: a lock held to commit makes the second wait and then
-- merge with what the first wrote, instead of inserting the same equipment twice.
with readings as (
    select * from {{ ref('stg_sensor_readings') }}
    {% if is_incremental() %}
        where ingested_at > {{ refreshed_since(this) }}
    {% endif %}
),

{% if is_incremental() %}
    known as (
        select * from {{ this }}
    ),
{% endif %}

newest as (
    select
        equipment_id,
        max(ts) as last_reading_at
    from readings
    group by equipment_id
),

final as (
    select
        newest.equipment_id,
        {% if is_incremental() %}
            greatest(newest.last_reading_at, known.last_reading_at) as last_reading_at,
        {% else %}
            newest.last_reading_at,
        {% endif %}
        now() as refreshed_at
    from newest
    {% if is_incremental() %}
        left join known on newest.equipment_id = known.equipment_id
    {% endif %}
)

select * from final
