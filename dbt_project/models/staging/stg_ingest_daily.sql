-- One row per UTC day whose drop files retention pruned from the ingest ledger: their totals.
with source as (
    select * from {{ source('ops', 'ingest_daily') }}
),

final as (
    select
        day,
        files,
        files_rejected,
        rows_total,
        rows_loaded,
        rows_duplicate,
        rows_quarantined
    from source
)

select * from final
