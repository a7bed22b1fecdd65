-- One row per drop file the ingest flow claimed (the ledger).
with source as (
    select * from {{ source('raw', 'ingest_files') }}
),

final as (
    select
        id as ingest_file_id,
        file_name,
        status,
        format,
        size_bytes,
        received_at,
        finished_at,
        rows_total,
        rows_loaded,
        rows_duplicate,
        rows_quarantined,
        rows_conflict,
        attempts,
        error,
        warnings
    from source
)

select * from final
