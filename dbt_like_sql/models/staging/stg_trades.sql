-- One row per trade, de-duplicated on the venue trade id (a replayed or overlapping capture must
-- not count a trade twice). ts_event falls back to ts_recv when the venue sends no event time.
with source as (

    select * from {{ source('lake', 'trades') }}

),

renamed as (

    select
        exchange,
        symbol,
        date,
        venue_symbol,
        trade_id,
        case when ts_event > 0 then ts_event else ts_recv end as ts_event,
        ts_recv,
        price,
        size,
        cast(price as double) * cast(size as double) as notional,
        side,
        seq
    from source

),

deduplicated as (

    select *
    from renamed
    qualify
        trade_id is null
        or trade_id = ''
        or row_number() over (
            partition by exchange, symbol, trade_id
            order by ts_recv, seq
        ) = 1

),

final as (

    select * from deduplicated

)

select * from final
