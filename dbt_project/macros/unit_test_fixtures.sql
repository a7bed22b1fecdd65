{#
  Fixtures for the unit tests in models/*.yml. The tests override the catalog vars with a small
  catalog of their own (one sensor `probe`, one setting `load`, type `probe_type` on one-hour
  slots), so they pass whatever catalog is installed.
#}

{% macro probe_grid(
    equipment_id, site='null', windows=[1, 3, 24], axis='time', width=3600, baseline_lag=168,
    horizon_seconds=604800
) -%}
    {#- One int_equipment_grids row: a `probe_type` equipment on one-hour slots. -#}
    select
        '{{ equipment_id }}'::text as equipment_id,
        {{ site }}::text as site,
        null::timestamptz as commissioned_at,
        'probe_type'::text as equipment_type,
        '{{ axis }}'::text as axis,
        {{ width }}::float8 as slot_width,
        1.0::float8 as slot_units,
        3600.0::float8 as unit_seconds,
        {% for w in windows -%}
            {{ w }}::bigint as w{{ loop.index }},
        {% endfor -%}
        3::bigint as baseline_slots,
        {{ baseline_lag }}::bigint as baseline_lag_slots,
        2::bigint as baseline_min_slots,
        {{ horizon_seconds }}::float8 as horizon_seconds,
        86400.0::float8 as life_unit_seconds,
        false as has_settings,
        false as bands_complete
{%- endmacro %}

{% macro probe_levels(equipment_id, rows) -%}
    {#- int_slot_levels rows: [hours after 2026-01-01 00:00 UTC, probe level]; slots are hours. -#}
    {% for row in rows -%}
        select
            '{{ equipment_id }}'::text as equipment_id,
            (date_part('epoch', timestamptz '2026-01-01 00:00:00+00') / 3600 + {{ row[0] }})::bigint as slot,
            timestamptz '2026-01-01 00:00:00+00' + interval '{{ row[0] }} hours' as ts,
            'probe_type'::text as equipment_type,
            0 as regime,
            {{ row[1] }}::float8 as probe_level,
            timestamptz '2026-01-01 00:00:00+00' + interval '{{ row[0] }} hours' as ingested_at
        {% if not loop.last %}union all{% endif %}
    {% endfor -%}
{%- endmacro %}

{% macro empty_fixture(columns) -%}
    {#- A fixture with no rows: `columns` as [name, type] pairs. -#}
    select
        {% for column in columns -%}
            null::{{ column[1] }} as {{ column[0] }}{% if not loop.last %},{% endif %}
        {% endfor -%}
    where false
{%- endmacro %}
