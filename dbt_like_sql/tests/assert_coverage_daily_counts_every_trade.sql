-- The daily coverage report accounts for every staged trade of its day.
with coverage as (

    select * from {{ ref('coverage_daily') }}

),

trades as (

    select exchange, symbol, date, count(*) as trade_count
    from {{ ref('stg_trades') }}
    group by all

),

final as (

    select coverage.exchange, coverage.symbol, coverage.date,
        coverage.trade_count, trades.trade_count as expected
    from coverage
    left join trades using (exchange, symbol, date)
    where coverage.trade_count <> coalesce(trades.trade_count, 0)

)

select * from final
