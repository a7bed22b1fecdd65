-- One row per audited action.
with source as (
    select * from {{ source('ops', 'audit_log') }}
),

final as (
    select
        id as audit_id,
        at,
        actor,
        actor_role,
        action,
        target_type,
        target_id,
        details
    from source
)

select * from final
