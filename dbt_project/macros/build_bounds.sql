{#- What an incremental model's last run had seen of the readings, so its next run looks back
    only as far as it must (macro watermark): see ops.readings_visible_before (migration
    0195_incremental_build_bounds.sql). Every incremental model runs these as hooks
    (dbt_project.yml); other models render nothing. -#}

{% macro relation_key(node) -%}
    {{ node.schema }}.{{ node.alias or node.identifier }}
{%- endmacro %}

{% macro begin_build_bound() -%}
    {#- Pre-hook, in the model's transaction before it reads: the time before which every
        reading is committed, so this run sees it; kept for the post-hook ('' when unknown). -#}
    {%- if model.config.materialized == 'incremental' -%}
        select set_config(
            'emps.visible_before', coalesce(ops.readings_visible_before()::text, ''), true
        )
    {%- endif -%}
{%- endmacro %}

{% macro record_build_bound() -%}
    {#- Post-hook, committed with the model's rows: its run has built every reading stamped
        before the earlier of its own bound and those of the incremental models it reads
        (a model reads the readings through them; one of them not rebuilt in this run covers
        only what its own last run saw). Null when any of these is unknown. -#}
    {%- if model.config.materialized == 'incremental' -%}
        with bounds as (
            select nullif(current_setting('emps.visible_before', true), '')::timestamptz as bound
            {%- for upstream in incremental_ancestors(model) %}
                union all
                select (
                    select recorded.visible_before from ops.dbt_build_bounds as recorded
                    where recorded.relation = '{{ upstream }}'
                )
            {%- endfor %}
        )

        insert into ops.dbt_build_bounds (relation, visible_before, recorded_at)
        select
            '{{ relation_key(this) }}',
            case when count(*) = count(bound) then min(bound) end,
            now()
        from bounds
        on conflict (relation) do update
            set visible_before = excluded.visible_before, recorded_at = excluded.recorded_at
    {%- endif -%}
{%- endmacro %}

{% macro incremental_ancestors(node) -%}
    {#- The relations of the incremental models `node` reads, directly or through views. -#}
    {%- set found = [] -%}
    {%- set state = namespace(frontier=node.depends_on.nodes | list, seen=[]) -%}
    {%- for _ in range(graph.nodes | length) if state.frontier -%}
        {%- set next = [] -%}
        {%- for unique_id in state.frontier if unique_id not in state.seen -%}
            {%- do state.seen.append(unique_id) -%}
            {%- set parent = graph.nodes.get(unique_id) -%}
            {%- if parent is not none and parent.resource_type == 'model' -%}
                {%- if parent.config.materialized == 'incremental' -%}
                    {%- do found.append(relation_key(parent)) -%}
                {%- endif -%}
                {%- do next.extend(parent.depends_on.nodes) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set state.frontier = next -%}
    {%- endfor -%}
    {{ return(found | unique | list) }}
{%- endmacro %}
