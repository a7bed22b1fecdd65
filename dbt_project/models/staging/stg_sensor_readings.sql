-- One row per equipment per reading timestamp: the catalog's channels (sensors and settings)
-- as received, and the usage counter of counter-clocked types.
-- The raw primary key (equipment_id, ts) already removes duplicates.
with source as (
    select * from {{ source('raw', 'sensor_readings') }}
),

final as (
    select
        equipment_id,
        ts,
        cycle::double precision as cycle,  -- noqa: RF04
        {% for channel in channels() -%}
            {{ channel }}::double precision as {{ channel }},
        {% endfor -%}
        ingested_at
    from source
)

select * from final
