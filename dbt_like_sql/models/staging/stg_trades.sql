-- One row per trade. A venue trade id counts once per exchange, symbol and receive date (a
-- replayed or overlapping capture must not count a trade twice), and ts_event falls back to
-- ts_recv when the venue sends no event time: the bar rule of fluxforge/bar_rule.py
-- (macros/bar_rule.sql).
with source as (

    -- the lake stores times as timestamps (microseconds, UTC); the models compute in int64
    -- ns since the epoch, like the hot store and the reader (fluxforge/tables.py)
    select * replace (epoch_ns(ts_event) as ts_event, epoch_ns(ts_recv) as ts_recv) from {{ source('lake', 'trades') }}

),

deduplicated as (

    select *
    from source
    qualify {{ is_first_receipt() }}

),

final as (

    select
        exchange,
        symbol,
        date,
        venue_symbol,
        trade_id,
        {{ bar_time() }} as ts_event,
        ts_recv,
        price,
        size,
        cast(price as double) * cast(size as double) as notional,
        side,
        seq
    from deduplicated

)

select * from final
