{#
    OHLCV bars of `width_ns` nanoseconds rolled up from the 1-minute bars, in UTC-aligned buckets
    of event time, labelled `interval_label` ('5m', '1h', '1d'). The width must be a whole number
    of minutes so that every 1-minute bar falls in exactly one bucket: open/close are then the
    first/last 1-minute open/close, volume, notional and trade_count add up exactly, and vwap is
    recomputed from the summed notional (not averaged). A bucket never spans two dates (the
    width divides a day), so a refresh of some dates reads only those dates of bars_1m.
#}
{% macro rollup_bars(interval_label, width_ns) %}
{%- if width_ns is not integer or width_ns <= 0 or width_ns % 60000000000 != 0
    or 86400000000000 % width_ns != 0 -%}
    {{ exceptions.raise_compiler_error(
        "rollup_bars(" ~ interval_label ~ ", " ~ width_ns ~ "): width_ns must be a positive "
        ~ "whole number of minutes in nanoseconds (a multiple of 60000000000) that divides a day"
    ) }}
{%- endif %}
with bars_1m as (

    select * from {{ ref('bars_1m') }}
    where {{ dates_predicate('date') }}

),

bucketed as (

    select
        *,
        bar_start_ns - (bar_start_ns % {{ width_ns }}) as bucket_ns
    from bars_1m

),

rolled as (

    select
        exchange,
        symbol,
        bucket_ns,
        first(open order by bar_start_ns) as open,
        max(high) as high,
        min(low) as low,
        last(close order by bar_start_ns) as close,
        sum(volume) as volume,
        sum(notional order by bar_start_ns) as notional,
        sum(trade_count) as trade_count
    from bucketed
    group by exchange, symbol, bucket_ns

),

final as (

    select
        exchange,
        symbol,
        cast(make_timestamp(bucket_ns // 1000) as date) as date,
        '{{ interval_label }}' as interval,
        make_timestamp(bucket_ns // 1000) as bar_start,
        bucket_ns as bar_start_ns,
        bucket_ns + {{ width_ns }} as bar_end_ns,
        open,
        high,
        low,
        close,
        volume,
        notional / nullif(cast(volume as double), 0) as vwap,
        notional,
        trade_count
    from rolled

)

select * from final
{% endmacro %}
