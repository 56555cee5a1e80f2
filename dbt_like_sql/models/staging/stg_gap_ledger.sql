-- One row per integrity gap (chain break, checksum mismatch, reconnect, ...).
with source as (

    select * from {{ source('lake', 'gap_ledger') }}

),

final as (

    select
        exchange,
        symbol,
        date,
        channel,
        ts_from,
        ts_to,
        greatest(ts_to - ts_from, 0) as gap_ns,
        cause,
        book_epoch,
        detail,
        segment
    from source

)

select * from final
