-- Hourly spread and depth statistics per exchange and symbol, from the injected snapshots
-- (two-sided snapshots only: a one-sided book has no spread).
with snapshots as (

    select * from {{ ref('stg_book_snapshots') }}
    where {{ lake_dates_predicate('date') }}

),

two_sided as (

    select
        *,
        ts_event - (ts_event % 3600000000000) as hour_ns
    from snapshots
    where best_bid is not null and best_ask is not null

),

stats as (

    select
        exchange,
        symbol,
        hour_ns,
        count(*) as snapshot_count,
        -- ordered averages: the same lake gives the same doubles, whatever DuckDB's threading
        avg(mid order by ts_recv, ts_event) as mid_avg,
        min(spread_bps) as spread_bps_min,
        avg(spread_bps order by ts_recv, ts_event) as spread_bps_avg,
        quantile_cont(spread_bps, 0.5) as spread_bps_p50,
        quantile_cont(spread_bps, 0.95) as spread_bps_p95,
        max(spread_bps) as spread_bps_max,
        avg(cast(bid_depth_10 as double) order by ts_recv, ts_event) as bid_depth_10_avg,
        avg(cast(ask_depth_10 as double) order by ts_recv, ts_event) as ask_depth_10_avg,
        min(least(bid_levels, ask_levels)) as levels_min,
        avg((bid_levels + ask_levels) / 2 order by ts_recv, ts_event) as levels_avg
    from two_sided
    group by exchange, symbol, hour_ns

),

final as (

    select
        exchange,
        symbol,
        cast(make_timestamp(hour_ns // 1000) as date) as date,
        make_timestamp(hour_ns // 1000) as hour_start,
        hour_ns as hour_start_ns,
        snapshot_count,
        mid_avg,
        spread_bps_min,
        spread_bps_avg,
        spread_bps_p50,
        spread_bps_p95,
        spread_bps_max,
        bid_depth_10_avg,
        ask_depth_10_avg,
        levels_min,
        levels_avg
    from stats

)

select * from final
where {{ dates_predicate('date') }}
