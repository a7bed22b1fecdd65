-- One row per landing-zone entry ingest never claims, old enough to look forgotten.
with ignored as (
    select * from {{ ref('stg_landing_ignored') }}
),

final as (
    select
        path,
        why,
        size_bytes,
        modified_at,
        first_seen_at,
        last_seen_at
    from ignored
)

select * from final
