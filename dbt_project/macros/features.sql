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

{% macro moments_count(state) -%}
    ({{ state }})[1]
{%- endmacro %}

{% macro moments_mean(state) -%}
    case when ({{ state }})[1] > 0 then ({{ state }})[4] / ({{ state }})[1] end
{%- endmacro %}

{% macro moments_std(state) -%}
    {#- Sample standard deviation (n - 1), as pandas' default. -#}
    case when ({{ state }})[1] > 1 then sqrt(greatest(({{ state }})[5], 0) / (({{ state }})[1] - 1)) end
{%- endmacro %}

{% macro moments_slope(state) -%}
    {#- Least-squares slope of value on hours: units per hour. -#}
    case when ({{ state }})[1] > 1 and ({{ state }})[3] > 0 then ({{ state }})[6] / ({{ state }})[3] end
{%- endmacro %}
