-- One row per changed price level (size 0 = level removed).
with source as (

    select * from {{ source('lake', 'book_deltas') }}

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
