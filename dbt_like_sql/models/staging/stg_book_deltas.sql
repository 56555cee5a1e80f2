-- One row per changed price level (size 0 = level removed).
with source as (

    -- the lake stores times as timestamps (microseconds, UTC); the models compute in int64
    -- ns since the epoch, like the hot store and the reader (fluxforge/tables.py)
    select * replace (epoch_ns(ts_event) as ts_event, epoch_ns(ts_recv) as ts_recv) from {{ source('lake', 'book_deltas') }}

),

final as (

    select
        exchange,
        symbol,
        date,
        venue_symbol,
        ts_event,
        ts_recv,
        side,
        price,
        size,
        update_id,
        is_snapshot,
        book_epoch,
        seq
    from source

)

select * from final
