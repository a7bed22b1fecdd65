{% macro refreshed_since(relation) -%}
    {#- The last refresh of an incremental dashboard table less the ingest lookback margin, as a
        literal: a literal lets the planner use the BRIN index on the source's write-time
        column, where a subquery's unknown value makes it scan every partition. -#}
    {{- watermark(relation, 'refreshed_at') -}}
{%- endmacro %}

{% macro silent_limit() -%}
    {#- How long without a reading makes equipment silent, as an interval: the limit in force
        in ops.thresholds (admins change it on the dashboard), var silent_minutes without it.
        Views evaluate it on every query, so a change shows at once. -#}
    interval '1 minute' * coalesce(
        (
            select silent.value from {{ source('ops', 'thresholds') }} as silent
            where silent.key = 'silent_minutes'
        ),
        {{ var("silent_minutes") | int }}
    )
{%- endmacro %}
