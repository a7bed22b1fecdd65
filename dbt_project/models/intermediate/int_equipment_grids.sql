{{ config(materialized='view') }}
-- One row per registered equipment whose type the catalog declares: its site and its type's
-- clock and feature grid (windows, baseline and horizon in slots or seconds).
with equipment as (
    select * from {{ ref('stg_equipment') }}
),

final as (
    select
        grid.*,
        equipment.equipment_id,
        equipment.site,
        equipment.commissioned_at
    from equipment
    inner join {{ type_grid() }} on equipment.equipment_type = grid.equipment_type
)

select * from final
