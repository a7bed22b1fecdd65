-- One row per threshold key in force (the severity bands, the silent-equipment limit). A view
-- over the ops table: an admin's change shows at once.
with thresholds as (
    select * from {{ ref('stg_thresholds') }}
),

final as (
    select
        key,
        value,
        description,
        updated_at,
        updated_by
    from thresholds
)

select * from final
