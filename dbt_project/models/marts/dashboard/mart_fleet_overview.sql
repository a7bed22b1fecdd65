-- One row per site, equipment type, severity band, health decile, silence and assessment: how
-- many equipment fall in each. The fleet overview page and the API's overview add up the rows
-- their filters keep, a few hundred rows instead of one per equipment. A view over
-- mart_equipment_health: an admin's new silence limit or a new alert shows at once.
with health as (
    select * from {{ ref('mart_equipment_health') }}
),

final as (
    select
        health.site,
        health.equipment_type,
        health.is_silent,
        coalesce(health.severity, 'UNSCORED') as severity,
        (floor(health.health_score / 10.0) * 10)::int as health_bucket,
        coalesce(health.assessment, 'ok') as assessment,
        count(*)::int as equipment,
        coalesce(sum(health.health_score), 0)::float8 as health_sum,
        max(health.prediction_as_of) as prediction_as_of,
        max(health.last_reading_as_of) as last_reading_as_of
    from health
    group by
        health.site,
        health.equipment_type,
        health.is_silent,
        coalesce(health.severity, 'UNSCORED'),
        (floor(health.health_score / 10.0) * 10)::int,
        coalesce(health.assessment, 'ok')
)

select * from final
