-- One row per quarantined row of a drop file: invalid, or a conflict with a stored reading.
with source as (
    select * from {{ source('raw', 'quarantined_rows') }}
),

final as (
    select
        id as quarantined_row_id,
        ingest_file_id,
        file_name,
        row_number,
        equipment_id,
        kind,
        reasons,
        raw_values,
        stored_values,
        quarantined_at,
        resolution,
        resolved_by,
        resolved_at,
        resolution_note,
        retry_requested_by,
        retry_requested_at
    from source
)

select * from final
