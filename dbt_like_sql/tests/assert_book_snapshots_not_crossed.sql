-- A snapshot's best bid is strictly below its best ask (a crossed book must never be written).
with snapshots as (

    select * from {{ ref('stg_book_snapshots') }}

),

final as (

    select exchange, symbol, ts_event, best_bid, best_ask, reason, book_epoch
    from snapshots
    where best_bid >= best_ask

)

select * from final
