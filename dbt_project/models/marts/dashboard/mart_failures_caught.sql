-- One row per recorded failure: whether a live alert warned of it within its type's horizon
-- before (archived alerts included), how many hours ahead, and whether it happened before the
-- first champion of var model_name was promoted (no model could have warned of it).
with failures as (
    select * from {{ ref('stg_failure_events') }}
),

equipment as (
    select * from {{ ref('stg_equipment') }}
),

equipment_types as (
    select * from {{ ref('stg_equipment_types') }}
),

alerts as (
    select
        equipment_id,
        created_at
    from {{ ref('stg_alerts') }}
    union all
    select
        equipment_id,
        created_at
    from {{ ref('stg_archived_alerts') }}
),

first_model as (
    select min(promoted_at) as first_model_at
    from {{ ref('stg_model_promotions') }}
    where alias = 'champion' and model_name = '{{ var("model_name") }}'
),

final as (
    select
        failures.failure_id,
        failures.equipment_id,
        equipment.equipment_type,
        equipment.site,
        failures.failed_at,
        failures.failure_mode,
        warned.first_alert_at,
        failures.failed_at < coalesce(first_model.first_model_at, 'infinity')
            as before_first_model,
        warned.first_alert_at is not null as caught,
        round(
            (date_part('epoch', failures.failed_at - warned.first_alert_at) / 3600)::numeric, 1
        )::float8 as warning_hours
    from failures
    inner join equipment on failures.equipment_id = equipment.equipment_id
    left join equipment_types on equipment.equipment_type = equipment_types.equipment_type
    cross join first_model
    left join lateral (
        select min(alerts.created_at) as first_alert_at
        from alerts
        where
            alerts.equipment_id = failures.equipment_id
            and alerts.created_at <= failures.failed_at
            and alerts.created_at > failures.failed_at - interval '1 second' * coalesce(
                equipment_types.horizon_seconds,
                {{ var("equipment_types") | map(attribute="horizon_seconds") | max }}
            )
    ) as warned on true
)

select * from final
