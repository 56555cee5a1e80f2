-- 5m OHLCV bars rolled up from the 1-minute bars (UTC-aligned buckets of event time).
with bars_1m as (

    select * from {{ ref('bars_1m') }}

),

bucketed as (

    select
        *,
        bar_start_ns - (bar_start_ns % 300000000000) as bucket_ns
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
        sum(notional) as notional,
        sum(trade_count) as trade_count
    from bucketed
    group by exchange, symbol, bucket_ns

),

final as (

    select
        exchange,
        symbol,
        cast(make_timestamp(bucket_ns // 1000) as date) as date,
        '5m' as interval,
        make_timestamp(bucket_ns // 1000) as bar_start,
        bucket_ns as bar_start_ns,
        bucket_ns + 300000000000 as bar_end_ns,
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
