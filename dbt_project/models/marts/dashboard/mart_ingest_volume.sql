-- One row per UTC day with drop files: files received and rejected, rows loaded, duplicate and
-- quarantined, and the quarantine rate. From the ingest ledger and, for the days retention
-- pruned from it, their kept totals (a file counts in one or the other). A view: a filter on
-- day reaches the ledger's index on its received day, so a week's chart does not group the
-- whole ledger.
with files as (
    select * from {{ ref('stg_ingest_files') }}
),

pruned_days as (
    select * from {{ ref('stg_ingest_daily') }}
),

-- date_bin from a UTC midnight, not date_trunc(..., 'UTC'): the same days, without a time zone
-- lookup per row.
ledger_days as (
    select
        date_bin(
            interval '1 day', files.received_at, timestamptz '2000-01-01 00:00:00+00'
        ) as day,  -- noqa: RF04
        count(*) as files,
        count(*) filter (where files.status in ('quarantined', 'failed')) as files_rejected,
        coalesce(sum(files.rows_total), 0) as rows_total,
        coalesce(sum(files.rows_loaded), 0) as rows_loaded,
        coalesce(sum(files.rows_duplicate), 0) as rows_duplicate,
        coalesce(sum(files.rows_quarantined), 0) as rows_quarantined
    from files
    group by date_bin(interval '1 day', files.received_at, timestamptz '2000-01-01 00:00:00+00')
),

days as (
    select * from ledger_days
    union all
    select * from pruned_days
),

final as (
    select
        day,
        sum(files)::bigint as files,
        sum(files_rejected)::bigint as files_rejected,
        sum(rows_total)::bigint as rows_total,
        sum(rows_loaded)::bigint as rows_loaded,
        sum(rows_duplicate)::bigint as rows_duplicate,
        sum(rows_quarantined)::bigint as rows_quarantined,
        coalesce(sum(rows_quarantined)::float8 / nullif(sum(rows_total), 0), 0)
            as quarantine_rate
    from days
    group by day
)

select * from final
