-- One row per integrity gap (chain break, checksum mismatch, reconnect, ...).
with source as (

    -- the lake stores times as timestamps (microseconds, UTC); the models compute in int64
    -- ns since the epoch, like the hot store and the reader (fluxforge/tables.py)
    select * replace (epoch_ns(ts_from) as ts_from, epoch_ns(ts_to) as ts_to) from {{ source('lake', 'gap_ledger') }}

),

final as (

    select
        exchange,
        symbol,
        date,
        channel,
        ts_from,
        ts_to,
        -- a gap with no good event before it (ts_from null) counts from where it was seen
        greatest(ts_to - coalesce(ts_from, ts_to), 0) as gap_ns,
        cause,
        book_epoch,
        detail,
        segment
    from source

)

select * from final
