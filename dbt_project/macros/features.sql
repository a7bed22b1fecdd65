{#
  Feature math shared by the feature model and its tests.

  emps_moments(y, x) accumulates PostgreSQL's own regression state
  [N, Sx, Sxx, Sy, Syy, Sxy] (Youngs-Cramer centred sums, numerically stable) in one pass,
  so one aggregate gives the count, mean, standard deviation and slope of a window.
  Sensor values are y and hours relative to the feature row's time are x.
#}

{% macro create_moments_aggregate() %}
    create or replace aggregate {{ target.schema }}.emps_moments(float8, float8) (
        sfunc = float8_regr_accum,
        stype = float8[],
        initcond = '{0,0,0,0,0,0}',
        combinefunc = float8_regr_combine,
        parallel = safe
    );
    create or replace aggregate {{ target.schema }}.emps_moments_merge(float8[]) (
        sfunc = float8_regr_combine,
        stype = float8[],
        initcond = '{0,0,0,0,0,0}',
        combinefunc = float8_regr_combine,
        parallel = safe
    )
{% endmacro %}

{% macro sensors() %}
    {#- The catalog's sensors, checked because they become column names. -#}
    {%- set names = var('sensors') -%}
    {%- for name in names -%}
        {%- if not modules.re.match('^[a-z][a-z0-9_]{0,40}$', name) -%}
            {{ exceptions.raise_compiler_error("sensor name '" ~ name ~ "' is not a lower-case column name") }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(names) }}
{% endmacro %}

{% macro window_hours() %}
    {{ return(var('window_hours') | map('int') | list) }}
{% endmacro %}

{% macro moments_mean(state) -%}
    {#- Mean of the values (null without any). -#}
    float8_regr_avgy({{ state }})
{%- endmacro %}

{% macro moments_std(state, count) -%}
    {#- Sample standard deviation (n - 1), as pandas' default. `count` is the number of values,
        passed separately so that an expensive state expression is evaluated once. -#}
    case when {{ count }} > 1 then sqrt(greatest(float8_regr_syy({{ state }}), 0) / ({{ count }} - 1)) end
{%- endmacro %}

{% macro moments_slope(state) -%}
    {#- Least-squares slope of value on hours: units per hour (null under two distinct times). -#}
    float8_regr_slope({{ state }})
{%- endmacro %}

{% macro hours_since_origin(ts) -%}
    {#- The x of every moments state: hours since a fixed origin, so the states of different
        hours and of single readings merge (mean, std and slope do not depend on the origin). -#}
    date_part('epoch', {{ ts }} - timestamptz '2000-01-01 00:00:00+00') / 3600.0
{%- endmacro %}

{% macro clock_bucket(width, ts) -%}
    {#- The start of the UTC clock interval of `width` holding ts (independent of the session time zone). -#}
    date_bin(interval '{{ width }}', {{ ts }}, timestamptz '2000-01-01 00:00:00+00')
{%- endmacro %}

{% macro slot_width() -%}
    {%- set minutes = var("missing_slot_minutes") | int -%}
    {%- if minutes <= 0 or 60 % minutes != 0 -%}
        {{ exceptions.raise_compiler_error("missing_slot_minutes must divide an hour, got " ~ minutes) }}
    {%- endif -%}
    {{ minutes }} minutes
{%- endmacro %}

{% macro reading_stats(readings, slots_after=none) -%}
    {#- Aggregates of a set of readings that merge across hours: per sensor a moments state,
        min and max; the number of occupied missing-rate slots (only those starting after
        `slots_after`, when given) and the latest ingested_at. -#}
    {% for sensor in sensors() -%}
        {{ target.schema }}.emps_moments(
            {{ readings }}.{{ sensor }}, {{ hours_since_origin(readings ~ '.ts') }}
        ) as {{ sensor }}_moments,
        count({{ readings }}.{{ sensor }}) as {{ sensor }}_count,
        min({{ readings }}.{{ sensor }}) as {{ sensor }}_min,
        max({{ readings }}.{{ sensor }}) as {{ sensor }}_max,
    {% endfor -%}
    count(distinct {{ clock_bucket(slot_width(), readings ~ '.ts') }})
    {%- if slots_after is not none %} filter (
        where {{ clock_bucket(slot_width(), readings ~ '.ts') }} > {{ slots_after }}
    ){% endif %} as filled_slots,
    max({{ readings }}.ingested_at) as ingested_at
{%- endmacro %}

{% macro hourly_fixture(rows, equipment_id='GEN-1') -%}
    {#- Unit-test rows of int_sensor_readings_hourly for the catalog's sensors (SQL, since dbt
        cannot cast YAML values to arrays): rows are [reading_hour, hours since 2000-01-01, value],
        one temperature reading each, of `equipment_id`; the other sensors are empty. -#}
    {% for row in rows -%}
        select
            '{{ equipment_id }}'::text as equipment_id,
            timestamptz '{{ row[0] }}' as reading_hour,
            {% for sensor in sensors() -%}
                {% if sensor == 'temperature' -%}
                    '{1,{{ row[1] }},0,{{ row[2] }},0,0}'::float8[] as temperature_moments,
                    1::bigint as temperature_count,
                    {{ row[2] }}::float8 as temperature_min,
                    {{ row[2] }}::float8 as temperature_max,
                {% else -%}
                    null::float8[] as {{ sensor }}_moments,
                    0::bigint as {{ sensor }}_count,
                    null::float8 as {{ sensor }}_min,
                    null::float8 as {{ sensor }}_max,
                {% endif -%}
            {% endfor -%}
            1::bigint as filled_slots,
            timestamptz '{{ row[0] }}' as ingested_at
        {% if not loop.last %}union all{% endif %}
    {% endfor -%}
{%- endmacro %}

{% macro norm_level(hours, norms, sensor) -%}
    {#- An equipment hour's mean level in its type's norm standard deviations from the norm's mean. -#}
    ({{ moments_mean(hours ~ '.' ~ sensor ~ '_moments') }} - {{ norms }}.{{ sensor }}_norm_mean)
    / nullif({{ norms }}.{{ sensor }}_norm_std, 0)
{%- endmacro %}

{% macro site_relative(hours, norms, levels, sensor) -%}
    {#- An equipment hour's level against its site's median level that hour (int_site_hourly_levels). -#}
    {{ norm_level(hours, norms, sensor) }} - {{ levels }}.{{ sensor }}_site_level
{%- endmacro %}

{% macro record_feature_definitions() -%}
    {#- A full build's post-hook: the feature definitions it ran (var features_fingerprint, from
        emps.transform) as the table's comment. Incremental runs only add rows, so history built
        by older definitions keeps its old values until a full build; `emps up` compares. -#}
    {%- if not is_incremental() -%}
        comment on table {{ this }} is 'features {{ var("features_fingerprint", "") }}'
    {%- endif -%}
{%- endmacro %}
