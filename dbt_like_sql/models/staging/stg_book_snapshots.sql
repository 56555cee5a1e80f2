-- One row per injected top-N snapshot with its best levels, spread and top-10 depth.
with source as (

    -- the lake stores times as timestamps (microseconds, UTC); the models compute in int64
    -- ns since the epoch, like the hot store and the reader (fluxforge/tables.py)
    select * replace (epoch_ns(ts_event) as ts_event, epoch_ns(ts_recv) as ts_recv) from {{ source('lake', 'book_snapshots') }}

),

levels as (

    select
        exchange,
        symbol,
        date,
        venue_symbol,
        ts_event,
        ts_recv,
        depth,
        reason,
        book_epoch,
        update_id,
        bid_px[1] as best_bid,
        bid_sz[1] as best_bid_size,
        ask_px[1] as best_ask,
        ask_sz[1] as best_ask_size,
        len(bid_px) as bid_levels,
        len(ask_px) as ask_levels,
        coalesce(list_sum(bid_sz[1:10]), 0) as bid_depth_10,
        coalesce(list_sum(ask_sz[1:10]), 0) as ask_depth_10
    from source

),

final as (

    select
        *,
        best_ask - best_bid as spread,
        (cast(best_bid as double) + cast(best_ask as double)) / 2 as mid,
        (cast(best_ask as double) - cast(best_bid as double))
            / ((cast(best_bid as double) + cast(best_ask as double)) / 2)
            * 10000 as spread_bps
    from levels

)

select * from final
