{% macro severity_levels() -%}
    {#- The severity bands, least severe first: the dbt side's one spelling of them (the Python
        side's is emps.domain.Severity). -#}
    {{ return(["LOW", "MEDIUM", "HIGH", "CRITICAL"]) }}
{%- endmacro %}

{% macro severity_rank(column) -%}
    {#- 1 (LOW) to 4 (CRITICAL), null for anything else: order by it descending for the most
        severe first. -#}
    array_position(array[
        {%- for level in severity_levels() -%}
            '{{ level }}'{{ ", " if not loop.last }}
        {%- endfor -%}
    ], {{ column }})
{%- endmacro %}
