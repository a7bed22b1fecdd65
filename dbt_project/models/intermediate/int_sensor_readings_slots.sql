-- One row per equipment per slot of its type's grid holding a reading: each channel's last value
-- in the slot (sensors and settings), the slot's last reading time `ts`, how many readings it
-- holds, and its operating regime (the nearest regime centre of its settings; 0 for types
-- without settings, null while the type's regimes are not fitted yet).
-- The last value, not the mean: a device reading every minute and a backfill reading every ten
-- minutes then give slot values with the same noise, so features do not depend on the cadence.
-- Incremental: the slots that received readings since the last run are recomputed from all
-- their readings (late readings included), one index range scan each. Materialisation, key and
-- indexes: dbt_project.yml (shared with int_slot_levels).
with readings as not materialized (
    select * from {{ ref('stg_sensor_readings') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

{% if settings() -%}
    regimes as (
        select * from {{ ref('stg_operating_regimes') }}
    ),
{%- endif %}

{% if is_incremental() %}
    touched as (
        select distinct
            readings.equipment_id,
            equipment.axis,
            equipment.slot_width,
            {{ slot_of('equipment.axis', 'equipment.slot_width', 'readings.ts', 'readings.cycle') }} as slot
        from readings
        inner join equipment on readings.equipment_id = equipment.equipment_id
        where {{ not_built_yet('readings', {
            'equipment_id': 'readings.equipment_id',
            'slot': slot_of('equipment.axis', 'equipment.slot_width', 'readings.ts', 'readings.cycle')
        }) }}
    ),

    {%- set axes = equipment_types() | map(attribute='axis') | unique | list %}

    slot_readings as (
        -- Lateral, so each slot is an index range scan of its equipment's readings: on time for
        -- wall-time types, on the counter for counter-clocked ones.
        {% for axis in ['time', 'counter'] if axis in axes %}
            {%- set position = 'readings.ts' if axis == 'time' else 'readings.cycle' -%}
            {%- set at = 'to_timestamp' if axis == 'time' else '' -%}
            {% if not loop.first %}union all{% endif %}
            select
                in_slot.*,
                touched.slot
            from touched
            cross join
                lateral (  -- noqa: ST05
                    select readings.*
                    from readings
                    where
                        readings.equipment_id = touched.equipment_id
                        and {{ position }} >= {{ at }}(touched.slot * touched.slot_width)
                        and {{ position }} < {{ at }}((touched.slot + 1) * touched.slot_width)
                    -- Keeps the subquery a per-slot index scan: flattened into a join, the
                    -- planner matched every new slot against every reading of its equipment.
                    offset 0  -- noqa: AM09
                ) as in_slot
            where touched.axis = '{{ axis }}' and touched.slot is not null
        {%- endfor %}
    ),
{% else %}
    slot_readings as (
        select
            readings.*,
            {{ slot_of('equipment.axis', 'equipment.slot_width', 'readings.ts', 'readings.cycle') }} as slot
        from readings
        inner join equipment on readings.equipment_id = equipment.equipment_id
    ),
{% endif %}

slots as (
    select
        slot_readings.equipment_id,
        slot_readings.slot,
        max(slot_readings.ts) as ts,
        count(*) as readings,
        {% for channel in channels() -%}
            {{ last_value('slot_readings.' ~ channel, 'slot_readings.ts') }} as {{ channel }},
        {% endfor -%}
        max(slot_readings.ingested_at) as ingested_at
    from slot_readings
    where slot_readings.slot is not null
    group by slot_readings.equipment_id, slot_readings.slot
),

final as (
    select
        slots.*,
        equipment.equipment_type,
        {% if settings() -%}
            case when not equipment.has_settings then 0 else nearest.regime end as regime
        {%- else -%}
            0 as regime
        {%- endif %}
    from slots
    inner join equipment on slots.equipment_id = equipment.equipment_id
    {% if settings() -%}
    left join lateral (
        -- The regime whose centre is nearest the slot's settings, each setting in its scale.
        select regimes.regime
        from regimes
        where equipment.has_settings and regimes.equipment_type = equipment.equipment_type
        group by regimes.regime
        order by
            sum(
                power((
                    case regimes.setting
                        {% for setting in settings() -%}
                            when '{{ setting }}' then slots.{{ setting }}
                        {% endfor -%}
                    end - regimes.centre
                ) / regimes.scale, 2)
            ),
            regimes.regime
        limit 1
    ) as nearest on true
    {%- endif %}
)

select * from final
