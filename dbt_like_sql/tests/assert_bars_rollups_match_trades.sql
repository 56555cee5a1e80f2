-- Rolled-up bars carry exactly the trades and volume of the trades they cover (on the refreshed
-- dates: the staging view reads only the lake dates a refresh needs).
-- (a Dagster asset check of bars_1d: the last model it reads)
{{ config(meta={'dagster': {'ref': {'name': 'bars_1d'}}}) }}

with trades as (

    select
        exchange,
        symbol,
        ts_event - (ts_event % 86400000000000) as day_ns,
        count(*) as trade_count,
        sum(size) as volume
    from {{ ref('stg_trades') }}
    where {{ lake_dates_predicate('date') }}
    group by all
    having {{ dates_predicate('cast(make_timestamp(day_ns // 1000) as date)') }}

),

rollups as (

    select interval, exchange, symbol, bar_start_ns, trade_count, volume
    from {{ ref('bars_1m') }}
    union all
    select interval, exchange, symbol, bar_start_ns, trade_count, volume
    from {{ ref('bars_5m') }}
    union all
    select interval, exchange, symbol, bar_start_ns, trade_count, volume
    from {{ ref('bars_1h') }}
    union all
    select interval, exchange, symbol, bar_start_ns, trade_count, volume
    from {{ ref('bars_1d') }}

),

per_day as (

    select
        interval,
        exchange,
        symbol,
        bar_start_ns - (bar_start_ns % 86400000000000) as day_ns,
        sum(trade_count) as trade_count,
        sum(volume) as volume
    from rollups
    group by all
    having {{ dates_predicate('cast(make_timestamp(day_ns // 1000) as date)') }}

),

final as (

    select per_day.*, trades.trade_count as expected_trades, trades.volume as expected_volume
    from per_day
    full outer join trades using (exchange, symbol, day_ns)
    where per_day.trade_count is distinct from trades.trade_count
        or per_day.volume is distinct from trades.volume

)

select * from final
