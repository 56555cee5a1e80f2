-- Daily coverage report per exchange · symbol: hours with trades / book data, activity counts,
-- and the gap ledger summed by cause.
with hourly as (

    select * from {{ ref('coverage_hourly') }}

),

gaps as (

    select * from {{ ref('stg_gap_ledger') }}
    where {{ lake_dates_predicate('date') }}

),

activity as (

    select
        exchange,
        symbol,
        date,
        count(*) filter (where has_trades) as hours_with_trades,
        count(*) filter (where has_book) as hours_with_book,
        count(*) filter (where has_trades or has_book) as hours_with_data,
        sum(trade_count) as trade_count,
        sum(book_update_count) as book_update_count,
        sum(book_snapshot_count) as book_snapshot_count
    from hourly
    group by exchange, symbol, date

),

gap_causes as (

    select
        exchange,
        symbol,
        cast(date as date) as date,
        count(*) as gap_count,
        sum(gap_ns) / 1e9 as gap_seconds,
        count(*) filter (where cause = 'chain_break') as chain_break_count,
        count(*) filter (where cause = 'checksum_mismatch') as checksum_mismatch_count,
        count(*) filter (where cause = 'reconnect') as reconnect_count,
        count(*) filter (
            where cause not in ('chain_break', 'checksum_mismatch', 'reconnect')
        ) as other_gap_count
    from gaps
    group by all

),

final as (

    select
        activity.exchange,
        activity.symbol,
        activity.date,
        activity.hours_with_trades,
        activity.hours_with_book,
        activity.hours_with_data,
        activity.hours_with_book / 24.0 as book_coverage,
        activity.trade_count,
        activity.book_update_count,
        activity.book_snapshot_count,
        coalesce(gap_causes.gap_count, 0) as gap_count,
        coalesce(gap_causes.gap_seconds, 0) as gap_seconds,
        coalesce(gap_causes.chain_break_count, 0) as chain_break_count,
        coalesce(gap_causes.checksum_mismatch_count, 0) as checksum_mismatch_count,
        coalesce(gap_causes.reconnect_count, 0) as reconnect_count,
        coalesce(gap_causes.other_gap_count, 0) as other_gap_count
    from activity
    left join gap_causes using (exchange, symbol, date)

)

select * from final
where {{ dates_predicate('date') }}
