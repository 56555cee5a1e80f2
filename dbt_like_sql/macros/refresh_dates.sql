{#
    Refresh by date. `var('dates')` (a list of ISO dates, one date, or a comma-separated string;
    unset = every date) is what a run refreshes: the marts delete and re-insert those dates
    (macros/replace_dates.sql) and read, through the staging views, only the lake dates they need.
#}

{% macro refresh_dates() %}
    {#- The refreshed dates as sorted ISO strings, or none for every date. -#}
    {%- set raw = var('dates', none) -%}
    {%- if raw is none or raw == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if raw is string -%}
        {%- set raw = raw.split(',') -%}
    {%- elif raw is not iterable -%}
        {%- set raw = [raw] -%}
    {%- endif -%}
    {%- set out = [] -%}
    {%- for item in raw -%}
        {%- set text = (item | string).strip() -%}
        {%- set parsed = none -%}
        {%- if modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
            {%- set parsed = modules.datetime.datetime.strptime(text, '%Y-%m-%d') if text[5:7] | int in range(1, 13) and text[8:10] | int in range(1, 32) else none -%}
        {%- endif -%}
        {%- if parsed is none -%}
            {{ exceptions.raise_compiler_error("var('dates'): " ~ text ~ " is not an ISO date (YYYY-MM-DD)") }}
        {%- endif -%}
        {%- do out.append(parsed.strftime('%Y-%m-%d')) -%}
    {%- endfor -%}
    {{ return(out | unique | sort) }}
{% endmacro %}

{% macro dates_predicate(column='date') %}
    {#- True for the rows of the refreshed dates (every row when all dates are refreshed). -#}
    {%- set dates = refresh_dates() -%}
    {%- if dates is none -%}
        true
    {%- elif dates | length == 0 -%}
        false
    {%- else -%}
        {{ column }} in ({% for d in dates %}date '{{ d }}'{{ ', ' if not loop.last }}{% endfor %})
    {%- endif -%}
{% endmacro %}

{% macro lake_dates_predicate(column='date') %}
    {#- True for the lake partitions a refresh reads: each refreshed date and its neighbours,
        because bars bucket event time while the lake is partitioned by receive date (a trade
        of 23:59:59.9 received after midnight is filed under the next date). The lake's date
        is ISO text, compared as text so the Delta scan prunes partitions. -#}
    {%- set dates = refresh_dates() -%}
    {%- if dates is none -%}
        true
    {%- else -%}
        {%- set wanted = [] -%}
        {%- for d in dates -%}
            {%- set day = modules.datetime.datetime.strptime(d, '%Y-%m-%d') -%}
            {%- for shift in [-1, 0, 1] -%}
                {%- do wanted.append((day + modules.datetime.timedelta(days=shift)).strftime('%Y-%m-%d')) -%}
            {%- endfor -%}
        {%- endfor -%}
        {{ column }} in ({% for d in wanted | unique | sort %}'{{ d }}'{{ ', ' if not loop.last }}{% endfor %})
    {%- endif -%}
{% endmacro %}
