-- One row per drop file in the ingest ledger, its warnings as one line of text.
with files as (
    select * from {{ ref('stg_ingest_files') }}
),

final as (
    select
        ingest_file_id,
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
        array_to_string(warnings, '; ') as warnings
    from files
)

select * from final
