-- One row per entry of the landing zone ingest never claims, old enough to look forgotten.
with source as (
    select * from {{ source('raw', 'landing_ignored') }}
),

final as (
    select
        path,
        why,
        size_bytes,
        modified_at,
        first_seen_at,
        last_seen_at
    from source
)

select * from final
