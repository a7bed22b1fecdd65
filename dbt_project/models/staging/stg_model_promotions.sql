-- One row per change of a registered model's alias.
with source as (
    select * from {{ source('ops', 'model_promotions') }}
),

final as (
    select
        id as promotion_id,
        model_name,
        alias,
        from_version,
        to_version,
        promoted_by,
        promoted_at,
        reason,
        metrics
    from source
)

select * from final
