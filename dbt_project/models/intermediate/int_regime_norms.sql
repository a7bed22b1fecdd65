{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        indexes=[{'columns': ['equipment_type', 'regime'], 'unique': True}],
    )
}}
-- One row per equipment type and operating regime: each sensor's norm, the mean and standard
-- deviation its slot values are compared with (`<s>_norm_mean`, `<s>_norm_std`).
-- A sensor with a healthy band in the catalog on a type without settings takes the band (mean:
-- its middle, standard deviation: a quarter of its width); a sensor without one, and every
-- sensor of a type with operating settings (each regime has its own norms), gets the norm learnt
-- from the type's slots in that regime, once it holds var norm_min_slots of them (at once when
-- every sensor of the type has a band).
-- Computed once per type and regime, so features keep one scale; a full build recomputes them
-- from all the data.
with slots as not materialized (
    select * from {{ ref('int_sensor_readings_slots') }}
),

bands as (
    select * from {{ ref('stg_equipment_type_envelopes') }}
),

regimes as (
    select * from {{ ref('stg_operating_regimes') }}
),

grid as (
    select * from {{ type_grid() }}
),

expected as (
    -- Every type and regime features will need: regime 0 of a type without settings, each
    -- fitted regime of a type with settings.
    select
        grid.equipment_type,
        0 as regime,
        grid.bands_complete,
        false as by_settings
    from grid
    where not grid.has_settings
    union all
    select distinct
        regimes.equipment_type,
        regimes.regime,
        false as bands_complete,
        true as by_settings
    from regimes
    inner join grid on regimes.equipment_type = grid.equipment_type
    where grid.has_settings
),

missing as (
    select expected.*
    from expected
    {% if is_incremental() %}
        where not exists (
            select 1 from {{ this }} as known
            where
                known.equipment_type = expected.equipment_type
                and known.regime = expected.regime
        )
    {% endif %}
),

observed as (
    -- Learnt norms, only for the types and regimes still missing one (a scan of their slots).
    select
        slots.equipment_type,
        slots.regime,
        {% for sensor in sensors() -%}
            avg(slots.{{ sensor }}) as {{ sensor }}_data_mean,
            stddev_samp(slots.{{ sensor }}) as {{ sensor }}_data_std,
        {% endfor -%}
        count(*) as slots
    from slots
    inner join missing
        on
            slots.equipment_type = missing.equipment_type
            and slots.regime = missing.regime
            and not missing.bands_complete
    group by slots.equipment_type, slots.regime
),

band_norms as (
    select
        equipment_type,
        {% for sensor in sensors() -%}
            max(fleet_norm_mean) filter (where sensor = '{{ sensor }}') as {{ sensor }}_band_mean,
            max(fleet_norm_std) filter (where sensor = '{{ sensor }}') as {{ sensor }}_band_std,
        {% endfor -%}
        count(*) as bands
    from bands
    group by equipment_type
),

final as (
    select
        missing.equipment_type,
        missing.regime,
        {% for sensor in sensors() -%}
            case
                when missing.by_settings then observed.{{ sensor }}_data_mean
                else coalesce(band_norms.{{ sensor }}_band_mean, observed.{{ sensor }}_data_mean)
            end as {{ sensor }}_norm_mean,
            case
                when missing.by_settings then nullif(observed.{{ sensor }}_data_std, 0)
                else coalesce(band_norms.{{ sensor }}_band_std, nullif(observed.{{ sensor }}_data_std, 0))
            end as {{ sensor }}_norm_std,
        {% endfor -%}
        coalesce(observed.slots, 0) as observed_slots,
        case
            when missing.bands_complete then 'catalog bands'
            when missing.by_settings then 'learnt per regime'
            else 'catalog bands and learnt'
        end as norm_source
    from missing
    left join observed
        on
            missing.equipment_type = observed.equipment_type
            and missing.regime = observed.regime
    left join band_norms on missing.equipment_type = band_norms.equipment_type
    where missing.bands_complete or observed.slots >= {{ var("norm_min_slots") | int }}
)

select * from final
