-- One row per kind of record retention archived to files under <home>/records/.
with archive_files as (
    select * from {{ ref('stg_archive_files') }}
),

final as (
    select
        kind,
        count(*) as files,
        sum(row_count)::bigint as rows,  -- noqa: RF04
        sum(size_bytes)::bigint as bytes,
        min(created_at) as first_archived,
        max(created_at) as last_archived,
        max(taken_before) as everything_before
    from archive_files
    group by kind
)

select * from final
