-- One row per equipment type, operating regime and setting: the regime's centre on that
-- setting and the setting's scale (emps.regimes fits them from the readings' settings).
with source as (
    select * from {{ source('raw', 'operating_regimes') }}
),

final as (
    select
        equipment_type,
        regime,
        setting,
        centre,
        scale
    from source
)

select * from final
