-- One row per alert on the platform's own health. A view: a new or cleared one shows at once.
with operations_alerts as (
    select * from {{ ref('stg_operations_alerts') }}
)

select * from operations_alerts
