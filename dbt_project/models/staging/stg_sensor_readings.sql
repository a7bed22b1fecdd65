-- One row per equipment per reading timestamp: the catalog's sensor columns, as received.
-- The raw primary key (equipment_id, ts) already removes duplicates.
with source as (
    select * from {{ source('raw', 'sensor_readings') }}
),

final as (
    select
        equipment_id,
        ts,
        {% for sensor in sensors() -%}
            {{ sensor }}::double precision as {{ sensor }},
        {% endfor -%}
        ingested_at
    from source
)

select * from final
