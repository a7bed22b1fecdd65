-- One row per quarantined row, invalid or in conflict with a stored reading, with its reasons
-- as one line of text; for a conflict, the reading's time and both versions of its values.
with quarantined as (
    select * from {{ ref('stg_quarantined_rows') }}
),

final as (
    select
        quarantined_row_id,
        file_name,
        row_number,
        equipment_id,
        kind,
        stored_values,
        quarantined_at,
        resolution,
        resolved_by,
        resolved_at,
        resolution_note,
        retry_requested_by,
        retry_requested_at,
        raw_values::text as raw_values,
        array_to_string(reasons, '; ') as reasons,
        -- Only a conflict's timestamp is known to parse (an invalid row's may be anything).
        case
            when kind = 'conflict' then (raw_values ->> 'timestamp')::timestamptz
        end as reading_time,
        raw_values - 'equipment_id' - 'timestamp' as received
    from quarantined
)

select * from final
