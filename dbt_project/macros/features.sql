{#
  The catalog as dbt sees it, and the feature math shared by the feature model's two paths.

  `emps dbt build` passes the catalog as vars (emps.transform.dbt_vars): sensors, settings and,
  per equipment type, its clock and feature grid in slots. Every window statistic is computed
  from the slot values of the type's grid (one value per slot: its last reading), so a device
  reading every minute and a backfill reading every ten give features of the same distribution.
#}

{% macro column_name(name, what) -%}
    {#- A catalog name used as a column, checked: it is pasted into SQL. -#}
    {%- if not modules.re.match('^[a-z][a-z0-9_]{0,40}$', name) -%}
        {{ exceptions.raise_compiler_error(what ~ " name '" ~ name ~ "' is not a lower-case column name") }}
    {%- endif -%}
    {{ return(name) }}
{%- endmacro %}

{% macro sensors() %}
    {#- The catalog's sensor channels (they get features). -#}
    {%- set names = [] -%}
    {%- for name in var('sensors') -%}
        {%- do names.append(column_name(name, 'sensor')) -%}
    {%- endfor -%}
    {{ return(names) }}
{% endmacro %}

{% macro settings() %}
    {#- The catalog's setting channels (operating conditions: they define regimes). -#}
    {%- set names = [] -%}
    {%- for name in var('settings', []) -%}
        {%- do names.append(column_name(name, 'setting')) -%}
    {%- endfor -%}
    {{ return(names) }}
{% endmacro %}

{% macro channels() %}
    {{ return(sensors() + settings()) }}
{% endmacro %}

{% macro equipment_types() %}
    {#- Per type: name, axis (time | counter), slot (seconds or counter units), slot_units (the
        slot in the clock's unit: hours or counter units), unit_seconds, windows (in slots),
        baseline, baseline_lag (null: the first span only) and baseline_min_slots (in slots),
        horizon_seconds, life_unit_seconds (a day for wall time, the counter's unit otherwise),
        has_settings and
        bands_complete (every sensor of the type has a band and it has no settings). -#}
    {%- set types = var('equipment_types') -%}
    {%- for t in types -%}
        {%- if (t.windows | length) != window_count() -%}
            {{ exceptions.raise_compiler_error("type " ~ t.name ~ " has " ~ (t.windows | length) ~ " windows, not " ~ window_count()) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(types) }}
{% endmacro %}

{% macro window_count() %}
    {{ return(var('window_count') | int) }}
{% endmacro %}

{% macro window_groups() %}
    {#- The distinct window tuples of the types: window frames are constants in SQL, so the
        feature model's window path runs one branch per tuple. -#}
    {%- set groups = [] -%}
    {%- for t in var('equipment_types') -%}
        {%- if t.windows not in groups -%}{%- do groups.append(t.windows) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(groups) }}
{% endmacro %}

{% macro baseline_period(slot, grid) -%}
    {#- The baseline period a slot's trailing baseline is: the last whole period of
        `baseline_slots` slots (counted from slot 0, so a day of ten-minute slots is a UTC day)
        that ends `baseline_lag_slots` or more before the slot. Null for a type that keeps its
        first span (no lag). `grid` is the relation carrying the type's grid columns. -#}
    (floor(
        ({{ slot }} - {{ grid }}.baseline_lag_slots + 1)::float8 / {{ grid }}.baseline_slots
    )::bigint - 1)
{%- endmacro %}

{% macro skip_join(slot, grid, equipment_id, alias='skip') -%}
    {#- The skipped baseline period (int_equipment_baseline_skips, a CTE `skips`) a slot's
        period is, if it is one: pair with reference_period(). A hash join on the few
        skipped periods, not a lookup per row. -#}
    left join skips as {{ alias }}
        on
            {{ equipment_id }} = {{ alias }}.equipment_id
            and {{ baseline_period(slot, grid) }} = {{ alias }}.period
{%- endmacro %}

{% macro reference_period(slot, grid, alias='skip') -%}
    {#- The baseline period a slot is compared with: its period (baseline_period), or the one
        before the run of skipped periods it is in (skip_join `alias`). -#}
    coalesce({{ alias }}.reference_period, {{ baseline_period(slot, grid) }})
{%- endmacro %}

{% macro is_trailing(period, grid) -%}
    {#- Whether a slot's trailing baseline period `period` holds the machine's data: it starts
        at or after its first slot (`grid`.first_slot). Until then, and for a type without a
        lag, the slot is compared with the machine's first span. -#}
    coalesce({{ period }} * {{ grid }}.baseline_slots >= {{ grid }}.first_slot, false)
{%- endmacro %}

{% macro baseline_stats(sensor, z, site_z, min_slots, name='baseline') -%}
    {#- A sensor's baseline over a span's rows: mean and standard deviation (n - 1) of its
        levels `z` (null with fewer than `min_slots` of them), and its mean level against its
        site's `site_z`, as `<sensor>_<name>_mean|std` and `<sensor>_site_<name>`. The first
        span (int_equipment_baselines) and the trailing periods are both this. -#}
    case when count({{ z }}) >= {{ min_slots }} then avg({{ z }}) end as {{ sensor }}_{{ name }}_mean,
    case when count({{ z }}) >= {{ min_slots }} then stddev_samp({{ z }}) end as {{ sensor }}_{{ name }}_std,
    avg({{ site_z }}) as {{ sensor }}_site_{{ name }}
{%- endmacro %}

{% macro trailing_stats() -%}
    {#- Every sensor's baseline_stats over the rows of a trailing baseline period, for the
        `targets` row the lateral subquery belongs to. -#}
    {% for sensor in sensors() -%}
        {{ baseline_stats(
            sensor, 'context.' ~ sensor ~ '_level',
            'context.' ~ sensor ~ '_level - site.' ~ sensor ~ '_site_level',
            'targets.baseline_min_slots', name='trailing'
        ) }}{% if not loop.last %},{% endif %}
    {% endfor -%}
{%- endmacro %}

{% macro in_reference_period() -%}
    {#- Whether a `context` row (levels_with_site) is in the baseline period of the `targets`
        row the lateral subquery belongs to (its `reference_period`). -#}
    context.equipment_id = targets.equipment_id
    and context.slot >= targets.reference_period * targets.baseline_slots
    and context.slot < (targets.reference_period + 1) * targets.baseline_slots
{%- endmacro %}

{% macro slot_window_sums(sensor) -%}
    {#- A sensor's window_sums over each window ending at the `targets` row's slot, from the
        `context` rows of its equipment; each ends with a comma. -#}
    {% for k in range(1, window_count() + 1) -%}
        {{ window_sums(
            sensor, k, 'context.' ~ sensor ~ '_level', '(context.slot - targets.slot)',
            'sum', filter='context.slot > targets.slot - targets.w' ~ k
        ) }},
    {% endfor -%}
{%- endmacro %}

{% macro levels_with_site() -%}
    {#- Slot levels (context), each with its site's level in that slot (site; wall-time axes
        only) for the `targets` row the lateral subquery belongs to; the caller picks the rows
        of its equipment and slot range. -#}
    from levels as context
    left join site_levels as site
        on
            targets.axis = 'time'
            and targets.site = site.site
            and targets.slot_width = site.slot_width
            and context.slot = site.slot
{%- endmacro %}

{% macro since_slot(grid) -%}
    {#- The wall-time slot holding var features_since (a partial rebuild's first row) on a
        type's grid (`grid`.slot_width). -#}
    floor(date_part('epoch', '{{ var("features_since") }}'::timestamptz) / {{ grid }}.slot_width)
{%- endmacro %}

{% macro type_grid() -%}
    {#- The per-type grid as a relation (join it on equipment_type). -#}
    (
        values
        {% for t in equipment_types() -%}
            (
                '{{ t.name | replace("'", "''") }}'::text,
                '{{ t.axis }}'::text,
                {{ t.slot }}::float8,
                {{ t.slot_units }}::float8,
                {{ t.unit_seconds }}::float8,
                {% for w in t.windows -%}{{ w | int }}::bigint, {% endfor -%}
                {{ t.baseline | int }}::bigint,
                {{ 'null' if t.baseline_lag is none else t.baseline_lag | int }}::bigint,
                {{ t.baseline_min_slots | int }}::bigint,
                {{ t.horizon_seconds }}::float8,
                {{ t.life_unit_seconds }}::float8,
                {{ 'true' if t.has_settings else 'false' }},
                {{ 'true' if t.bands_complete else 'false' }}
            ){% if not loop.last %},{% endif %}
        {% endfor -%}
    ) as grid (
        equipment_type, axis, slot_width, slot_units, unit_seconds,
        {% for k in range(1, window_count() + 1) -%}w{{ k }}, {% endfor -%}
        baseline_slots, baseline_lag_slots, baseline_min_slots, horizon_seconds, life_unit_seconds, has_settings,
        bands_complete
    )
{%- endmacro %}

{% macro slot_of(axis, width, ts, cycle) -%}
    {#- The slot a reading falls in on its type's grid: UTC-anchored time slots, or counter
        slots; null for a counter reading without its counter. -#}
    case {{ axis }}
        when 'time' then floor(date_part('epoch', {{ ts }}) / {{ width }})
        else floor({{ cycle }} / {{ width }})
    end::bigint
{%- endmacro %}

{% macro last_value(column, order_by) -%}
    {#- The value of `column` in the group's last row (by `order_by`) that has one. -#}
    (array_agg({{ column }} order by {{ order_by }} desc) filter (where {{ column }} is not null))[1]
{%- endmacro %}

{% macro create_window_aggregates() %}
    {#- A float8 sum that supports moving window frames (an inverse transition), so a window of
        n slots costs O(1) per row instead of O(n): PostgreSQL's own float8 sum has none. -#}
    create or replace aggregate {{ target.schema }}.emps_msum(float8) (
        sfunc = float8pl,
        stype = float8,
        initcond = '0',
        msfunc = float8pl,
        minvfunc = float8mi,
        mstype = float8,
        minitcond = '0',
        parallel = safe
    )
{% endmacro %}

{% macro window_sums(sensor, k, z, x, agg, filter=none, over=none) -%}
    {#- The sums a window statistic needs of a sensor's slot levels `z` at positions `x`: count,
        sum, sum of squares, of x, of x^2, of x z, and the count outside the norm. `agg` is
        the sum aggregate (sum in the lateral path, emps_msum over a frame in the window path);
        `filter` restricts the rows (lateral path), `over` names the frame (window path). -#}
    {%- set tail -%}
        {%- if filter is not none %} filter (where {{ filter }}){% endif -%}
        {%- if over is not none %} over {{ over }}{% endif -%}
    {%- endset -%}
    {%- set has = z ~ ' is not null' -%}
    count({{ z }}){{ tail }} as {{ sensor }}_n_w{{ k }},
    {{ agg }}({{ z }}){{ tail }} as {{ sensor }}_sz_w{{ k }},
    {{ agg }}({{ z }} * {{ z }}){{ tail }} as {{ sensor }}_szz_w{{ k }},
    {{ agg }}(case when {{ has }} then {{ x }} end){{ tail }} as {{ sensor }}_sx_w{{ k }},
    {{ agg }}(case when {{ has }} then {{ x }} * {{ x }} end){{ tail }} as {{ sensor }}_sxx_w{{ k }},
    {{ agg }}({{ x }} * {{ z }}){{ tail }} as {{ sensor }}_sxz_w{{ k }},
    {{ agg }}(case when abs({{ z }}) > {{ var('outside_sigmas') }} then 1.0 when {{ has }} then 0.0 end){{ tail }} as {{ sensor }}_so_w{{ k }}
{%- endmacro %}

{% macro window_stats(sums, sensor, k, slot_units) -%}
    {#- Mean, standard deviation (n - 1), slope per clock unit and share outside the norm from
        window_sums. x is in slots; the slope is divided by the slot width in clock units. -#}
    {%- set n = sums ~ '.' ~ sensor ~ '_n_w' ~ k -%}
    {%- set sz = sums ~ '.' ~ sensor ~ '_sz_w' ~ k -%}
    {%- set szz = sums ~ '.' ~ sensor ~ '_szz_w' ~ k -%}
    {%- set sx = sums ~ '.' ~ sensor ~ '_sx_w' ~ k -%}
    {%- set sxx = sums ~ '.' ~ sensor ~ '_sxx_w' ~ k -%}
    {%- set sxz = sums ~ '.' ~ sensor ~ '_sxz_w' ~ k -%}
    {%- set so = sums ~ '.' ~ sensor ~ '_so_w' ~ k -%}
    case when {{ n }} > 0 then {{ sz }} / {{ n }} end as {{ sensor }}_mean_w{{ k }},
    case
        when {{ n }} > 1 then sqrt(greatest({{ szz }} - {{ sz }} * {{ sz }} / {{ n }}, 0) / ({{ n }} - 1))
    end as {{ sensor }}_std_w{{ k }},
    case
        when {{ n }} > 1 and {{ sxx }} - {{ sx }} * {{ sx }} / {{ n }} > 1e-9
            then ({{ sxz }} - {{ sx }} * {{ sz }} / {{ n }})
            / ({{ sxx }} - {{ sx }} * {{ sx }} / {{ n }}) / {{ slot_units }}
    end as {{ sensor }}_slope_w{{ k }},
    case when {{ n }} > 0 then {{ so }} / {{ n }} end as {{ sensor }}_outside_w{{ k }}
{%- endmacro %}

{% macro last_service_join(rows) -%}
    {#- The service span (a CTE `service_spans` of each service until the next) holding each
        row's time: its last service. A hash join on the few services, not a lookup per row. -#}
    left join service_spans as last_service
        on
            {{ rows }}.equipment_id = last_service.equipment_id
            and {{ rows }}.ts >= last_service.serviced_at
            and ({{ rows }}.ts < last_service.next_service_at or last_service.next_service_at is null)
{%- endmacro %}

{% macro record_feature_definitions() -%}
    {#- A full build's post-hook: the feature definitions it ran (var features_fingerprint, from
        emps.transform) as the table's comment. Incremental runs only add rows, so history built
        by older definitions keeps its old values until a full build; `emps up` compares. -#}
    {%- if not is_incremental() -%}
        comment on table {{ this }} is 'features {{ var("features_fingerprint", "") }}'
    {%- endif -%}
{%- endmacro %}

{% macro not_built_yet(rows, matches=none) -%}
    {#- A condition on `rows` (a CTE or alias with `ingested_at`): the rows this incremental
        model has not yet been built from, those written after its watermark and not already
        behind a row of its own written as late (a reading the watermark lets in again: one
        committed late, or any within the look-back margin where no bound is known). `matches`: this model's key columns, each with the
        expression it is matched on; by default equipment_id and slot of `rows`. -#}
    {%- set matches = matches or {'equipment_id': rows ~ '.equipment_id', 'slot': rows ~ '.slot'} -%}
    {{ rows }}.ingested_at > {{ watermark(this) }}
    and not exists (
        select 1 from {{ this }} as known
        where
            {% for column, expression in matches.items() -%}
                known.{{ column }} = {{ expression }}
                and {% endfor -%}
            known.ingested_at >= {{ rows }}.ingested_at
    )
{%- endmacro %}

{% macro watermark(relation, column='ingested_at') -%}
    {#- Where an incremental relation's next run starts reading `column`, as a literal (a literal
        lets the planner use the BRIN index on raw.sensor_readings). For ingested_at, the bound
        its last run recorded (macros/build_bounds.sql): every reading stamped before it was
        committed then and built, so a run after a bulk load reads what came since, and a load
        that stayed open across a build is still read. Where no bound is known (a server that
        hides other sessions, the first run after an upgrade), and for other columns: the
        newest value less the ingest lookback margin. -#}
    {%- if execute -%}
        {%- set query -%}
            select (case
                when max({{ column }}) is null then '-infinity'::timestamptz
                else coalesce(
                    {%- if column == 'ingested_at' %}
                    (
                        select recorded.visible_before - interval '1 microsecond'
                        from ops.dbt_build_bounds as recorded
                        where recorded.relation = '{{ relation_key(relation) }}'
                    ),
                    {%- endif %}
                    max({{ column }}) - interval '{{ var("ingest_lookback_minutes") | int }} minutes'
                )
            end)::text
            from {{ relation }}
        {%- endset -%}
        '{{ run_query(query).columns[0].values()[0] }}'::timestamptz
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}
