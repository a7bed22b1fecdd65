-- One row per file retention archived rows to under <home>/records/.
with source as (
    select * from {{ source('ops', 'archive_files') }}
),

final as (
    select
        id as archive_file_id,
        kind,
        path,
        row_count,
        sha256,
        size_bytes,
        taken_before,
        created_at
    from source
)

select * from final
