-- One row per drop file in the ingest ledger, its warnings also as one line of text.
with files as (
    select * from {{ ref('stg_ingest_files') }}
),

final as (
    select
        files.*,
        array_to_string(files.warnings, '; ') as warning_text
    from files
)

select * from final
