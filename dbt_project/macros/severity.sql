{#
  The severity bands as the models rank and count them, from var severities (least severe first).
  emps.domain.Severity is the same list on the Python side.
#}

{% macro severities() %}
    {#- The band names, least severe first; each must also read as a column name in lower case. -#}
    {%- set bands = var('severities') -%}
    {%- for band in bands -%}
        {%- do column_name(band | lower, 'severity') -%}
    {%- endfor -%}
    {{ return(bands) }}
{% endmacro %}

{% macro severity_rank(column) -%}
    {#- 1 for the least severe band up to the number of bands for the most severe; 0 otherwise. -#}
    case {{ column }}
        {% for band in severities() -%}
            when '{{ band }}' then {{ loop.index }}
        {% endfor -%}
        else 0
    end
{%- endmacro %}
