-- One row per equipment per reading timestamp: every catalog channel and when it was ingested.
-- A view: readers filter by equipment and time, which the raw table's key serves.
with readings as (
    select * from {{ ref('stg_sensor_readings') }}
),

final as (
    select * from readings
)

select * from final
