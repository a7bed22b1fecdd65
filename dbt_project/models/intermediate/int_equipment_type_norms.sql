-- One row per equipment type: each sensor's fleet norm (mean and standard deviation) read from
-- the catalog's healthy band.
with envelopes as (
    select * from {{ ref('stg_equipment_type_envelopes') }}
),

final as (
    select
        {% for sensor in sensors() -%}
            max(fleet_norm_mean) filter (where sensor = '{{ sensor }}') as {{ sensor }}_norm_mean,
            max(fleet_norm_std) filter (where sensor = '{{ sensor }}') as {{ sensor }}_norm_std,
        {% endfor -%}
        equipment_type
    from envelopes
    group by equipment_type
)

select * from final
