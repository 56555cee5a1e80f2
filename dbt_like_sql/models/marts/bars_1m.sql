-- 1-minute OHLCV bars from trades, in UTC-aligned buckets of bar time (the bar rule of
-- fluxforge/bar_rule.py: open/close are the first and last trade in trade_order()); vwap =
-- sum(price * size) / sum(size) in double. Only the refreshed dates (var 'dates') are selected.
with trades as (

    select * from {{ ref('stg_trades') }}
    where {{ lake_dates_predicate('date') }}

),

bucketed as (

    select
        *,
        ts_event - (ts_event % 60000000000) as bucket_ns
    from trades

),

bars as (

    select
        exchange,
        symbol,
        bucket_ns,
        first(price order by {{ trade_order() }}) as open,
        max(price) as high,
        min(price) as low,
        last(price order by {{ trade_order() }}) as close,
        sum(size) as volume,
        -- an ordered sum: the same lake gives the same double, whatever DuckDB's threading
        sum(notional order by {{ trade_order() }}) as notional,
        count(*) as trade_count
    from bucketed
    group by exchange, symbol, bucket_ns

),

final as (

    select
        exchange,
        symbol,
        cast(make_timestamp(bucket_ns // 1000) as date) as date,
        '1m' as interval,
        make_timestamp(bucket_ns // 1000) as bar_start,
        bucket_ns as bar_start_ns,
        bucket_ns + 60000000000 as bar_end_ns,
        open,
        high,
        low,
        close,
        volume,
        notional / nullif(cast(volume as double), 0) as vwap,
        notional,
        trade_count
    from bars

)

select * from final
where {{ dates_predicate('date') }}
