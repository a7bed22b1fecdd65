-- One row per equipment per reading timestamp (the feature rows), labelled with the next failure.
-- Rows between a failure and its repair are left out: the equipment was down, not degrading.
-- A view, so failures recorded later relabel the history without a rebuild.
with features as (
    select * from {{ ref('fct_equipment_features') }}
),

-- Inlined: used twice, and its filters must reach the raw table\'s index.
failures as not materialized (
    select * from {{ ref('stg_failure_events') }}
),

labelled as (
    select
        features.*,
        next_failure.failed_at as next_failure_at
    from features
    left join lateral (
        select min(failures.failed_at) as failed_at
        from failures
        where
            failures.equipment_id = features.equipment_id
            and failures.failed_at > features.ts
    ) as next_failure on true
    where not exists (
        select 1 from failures
        where
            failures.equipment_id = features.equipment_id
            and failures.failed_at <= features.ts
            and (failures.repaired_at is null or features.ts < failures.repaired_at)
    )
),

final as (
    select
        labelled.*,
        coalesce(
            labelled.next_failure_at
            <= labelled.ts + interval '{{ var("failure_horizon_days") | int }} days',
            false
        ) as fails_within_horizon,
        date_part('epoch', labelled.next_failure_at - labelled.ts) / 86400.0 as days_until_failure,
        -- False while the horizon has not yet passed without a failure: the label may still flip.
        (
            labelled.next_failure_at is not null
            or labelled.ts + interval '{{ var("failure_horizon_days") | int }} days' <= now()
        ) as label_is_final
    from labelled
)

select * from final
