-- One row per change of a registered model's alias (champion, challenger), oldest first.
with promotions as (
    select * from {{ ref('stg_model_promotions') }}
),

final as (
    select
        promotion_id,
        promoted_at,
        model_name,
        alias,
        from_version,
        to_version,
        promoted_by,
        reason,
        metrics
    from promotions
)

select * from final
