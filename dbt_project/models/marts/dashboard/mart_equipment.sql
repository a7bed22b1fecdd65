-- One row per registered equipment: the registry the dashboard's pickers and filters list.
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

final as (
    select
        equipment_id,
        equipment_type,
        site
    from equipment
)

select * from final
