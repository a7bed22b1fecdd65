-- One row per equipment per slot (the feature rows), labelled with the next failure, of the
-- equipment not held out of training (a fleet pack's test units).
-- Rows between a failure and its repair are left out: the equipment was down, not degrading.
-- A prevented failure (a fault found in time) labels the rows before it as leading to a failure;
-- their remaining life is unknown (null): it never failed.
-- A view, so failures recorded later relabel the history without a rebuild.
with features as (
    select * from {{ ref('fct_equipment_features') }}
),

equipment as (
    select * from {{ ref('int_equipment_grids') }}
),

registry as (
    select * from {{ ref('stg_equipment') }}
),

-- Inlined: used twice, and its filters must reach the raw table\'s index.
failures as not materialized (
    select * from {{ ref('stg_failure_events') }}
),

last_observations as (
    -- Each equipment's last feature row: a label is final only once its horizon has passed
    -- inside the equipment's own history (a unit whose data stops is censored, not healthy).
    select
        equipment_id,
        max(ts) as last_observed_at
    from features
    group by equipment_id
),

labelled as (
    select
        features.*,
        equipment.horizon_seconds,
        equipment.life_unit_seconds,
        last_observations.last_observed_at,
        next_failure.failed_at as next_failure_at,
        next_failure.prevented as next_failure_prevented
    from features
    inner join equipment on features.equipment_id = equipment.equipment_id
    inner join registry
        on features.equipment_id = registry.equipment_id and not registry.holdout
    inner join last_observations on features.equipment_id = last_observations.equipment_id
    left join lateral (
        select
            failures.failed_at,
            failures.prevented
        from failures
        where
            failures.equipment_id = features.equipment_id
            and failures.failed_at > features.ts
        order by failures.failed_at
        limit 1
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
            <= labelled.ts + labelled.horizon_seconds * interval '1 second',
            false
        ) as fails_within_horizon,
        case
            when not labelled.next_failure_prevented
                then date_part('epoch', labelled.next_failure_at - labelled.ts) / 86400.0
        end as days_until_failure,
        -- In the type's life unit: days for wall time, the counter's unit (cycles) otherwise.
        case
            when not labelled.next_failure_prevented
                then
                    date_part('epoch', labelled.next_failure_at - labelled.ts)
                    / labelled.life_unit_seconds
        end as remaining_life,
        -- False while the horizon after the row has not passed inside the equipment's history
        -- (nor now) and no failure is known: the label may still flip.
        (
            labelled.next_failure_at is not null
            or labelled.ts + labelled.horizon_seconds * interval '1 second'
            <= least(labelled.last_observed_at, now())
        ) as label_is_final
    from labelled
)

select * from final
