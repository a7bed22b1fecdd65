-- One row per audited action, its details as JSON text. A view: an action shows at once.
with audit_log as (
    select * from {{ ref('stg_audit_log') }}
),

final as (
    select
        audit_id,
        at,
        actor,
        actor_role,
        action,
        target_type,
        target_id,
        details::text as details
    from audit_log
)

select * from final
