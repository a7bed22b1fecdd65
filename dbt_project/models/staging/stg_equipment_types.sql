-- One row per equipment type: its clock and how far ahead a failure is predicted.
with source as (
    select * from {{ source('raw', 'equipment_types') }}
),

final as (
    select
        equipment_type,
        description,
        clock_kind,
        clock_unit,
        life_unit,
        horizon_seconds
    from source
)

select * from final
