-- Presence of trades and book data per exchange · symbol · UTC hour (receive time, the same clock
-- as the daily partitions), with the gaps revealed in that hour. Every hour of every day that has
-- any data appears, so empty hours show up as zeros instead of missing rows.
with trades as (

    select * from {{ ref('stg_trades') }}
    where {{ lake_dates_predicate('date') }}

),

book_deltas as (

    select * from {{ ref('stg_book_deltas') }}
    where {{ lake_dates_predicate('date') }}

),

book_snapshots as (

    select * from {{ ref('stg_book_snapshots') }}
    where {{ lake_dates_predicate('date') }}

),

gaps as (

    select * from {{ ref('stg_gap_ledger') }}
    where {{ lake_dates_predicate('date') }}

),

trade_hours as (

    select exchange, symbol, date, (ts_recv // 3600000000000) % 24 as hour, count(*) as n
    from trades
    group by all

),

delta_hours as (

    select exchange, symbol, date, (ts_recv // 3600000000000) % 24 as hour, count(*) as n
    from book_deltas
    group by all

),

snapshot_hours as (

    select exchange, symbol, date, (ts_recv // 3600000000000) % 24 as hour, count(*) as n
    from book_snapshots
    group by all

),

gap_hours as (

    select
        exchange,
        symbol,
        date,
        (ts_to // 3600000000000) % 24 as hour,
        count(*) as n,
        sum(gap_ns) / 1e9 as seconds
    from gaps
    group by all

),

days as (

    select exchange, symbol, date from trade_hours
    union
    select exchange, symbol, date from delta_hours
    union
    select exchange, symbol, date from snapshot_hours
    union
    select exchange, symbol, date from gap_hours

),

spine as (

    select days.exchange, days.symbol, days.date, hours.range as hour
    from days
    cross join range(24) as hours

),

final as (

    select
        spine.exchange,
        spine.symbol,
        cast(spine.date as date) as date,
        spine.hour,
        cast(spine.date as timestamp) + to_hours(spine.hour) as hour_start,
        coalesce(trade_hours.n, 0) as trade_count,
        coalesce(delta_hours.n, 0) as book_update_count,
        coalesce(snapshot_hours.n, 0) as book_snapshot_count,
        coalesce(gap_hours.n, 0) as gap_count,
        coalesce(gap_hours.seconds, 0) as gap_seconds,
        coalesce(trade_hours.n, 0) > 0 as has_trades,
        coalesce(delta_hours.n, 0) + coalesce(snapshot_hours.n, 0) > 0 as has_book
    from spine
    left join trade_hours using (exchange, symbol, date, hour)
    left join delta_hours using (exchange, symbol, date, hour)
    left join snapshot_hours using (exchange, symbol, date, hour)
    left join gap_hours using (exchange, symbol, date, hour)

)

select * from final
where {{ dates_predicate('date') }}
