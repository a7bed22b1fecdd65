-- One row per equipment per slot holding a reading: each sensor's slot value as a level, in its
-- type's norm standard deviations from the norm's mean for the slot's operating regime
-- (`<s>_level`; int_regime_norms). Levels of machines of different types, and of one machine in
-- different regimes, are on one scale: what every feature is computed from.
-- Null while the type or regime has no norm yet. Incremental: the slots recomputed since the last
-- run are recomputed here. Materialisation, key and indexes: dbt_project.yml (shared with
-- int_sensor_readings_slots).
with slots as not materialized (
    select * from {{ ref('int_sensor_readings_slots') }}
),

norms as (
    select * from {{ ref('int_regime_norms') }}
),

changed as (
    select * from slots
    {% if is_incremental() %}
        where {{ not_built_yet('slots') }}
    {% endif %}
),

final as (
    select
        changed.equipment_id,
        changed.slot,
        changed.ts,
        changed.equipment_type,
        changed.regime,
        {% for sensor in sensors() -%}
            (changed.{{ sensor }} - norms.{{ sensor }}_norm_mean)
            / norms.{{ sensor }}_norm_std as {{ sensor }}_level,
        {% endfor -%}
        changed.ingested_at
    from changed
    left join norms
        on
            changed.equipment_type = norms.equipment_type
            and changed.regime = norms.regime
)

select * from final
