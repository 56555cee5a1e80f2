{#- Generated from fluxforge/feed_stats.py: how per-segment feed_stats rows
    merge per hour (docs/data-guide.md, "feed_stats: how far each feed can be
    trusted"). Edit the module, then write this file with
    `uv run python -m fluxforge.feed_stats`. -#}

{% macro feed_stats_sums() -%}
{{ return(['messages', 'rows', 'latency_messages', 'negative_latency', 'gaps', 'reconnects']) }}
{%- endmacro %}

{% macro feed_stats_minima() -%}
{{ return(['clock_offset_ns', 'first_ts_recv']) }}
{%- endmacro %}

{% macro feed_stats_maxima() -%}
{{ return(['latency_max_ns', 'last_ts_recv']) }}
{%- endmacro %}

{% macro feed_stats_quantiles() -%}
{{ return([['latency_p50_ns', 0.5], ['latency_p90_ns', 0.9], ['latency_p99_ns', 0.99]]) }}
{%- endmacro %}

{% macro feed_stats_timed() -%}
latency_messages > 0
{%- endmacro %}

{% macro feed_stats_silent_minutes(bitmap) -%}
60 - bit_count({{ bitmap }})
{%- endmacro %}

{% macro latency_bin_value(bin) -%}
(case when {{ bin }} = 0 then cast(0 as double) else sign({{ bin }}) * cast(1000 as double) * pow(cast(2 as double), (cast(abs({{ bin }}) as double) - cast(0.5 as double)) / cast(16 as double)) end)
{%- endmacro %}

{% macro latency_quantile_rank(q, total) -%}
round_even(cast({{ q }} as double) * cast({{ total }} - 1 as double), 0)
{%- endmacro %}

{% macro latency_quantile_value(bin, lo, hi) -%}
cast(round_even(least(greatest((case when {{ bin }} = 0 then cast(0 as double) else sign({{ bin }}) * cast(1000 as double) * pow(cast(2 as double), (cast(abs({{ bin }}) as double) - cast(0.5 as double)) / cast(16 as double)) end), cast({{ lo }} as double)), cast({{ hi }} as double)), 0) as bigint)
{%- endmacro %}
