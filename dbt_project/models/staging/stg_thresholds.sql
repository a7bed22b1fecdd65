-- One row per threshold key: the severity bands and the silent-equipment limit in force.
with source as (
    select * from {{ source('ops', 'thresholds') }}
),

final as (
    select
        key,
        value,
        description,
        updated_at,
        updated_by
    from source
)

select * from final
