-- The daily coverage report accounts for every staged trade of its day (refreshed dates).
-- (a Dagster asset check of coverage_daily: the last model it reads)
{{ config(meta={'dagster': {'ref': {'name': 'coverage_daily'}}}) }}

with coverage as (

    select * from {{ ref('coverage_daily') }}
    where {{ dates_predicate('date') }}

),

trades as (

    select exchange, symbol, cast(date as date) as date, count(*) as trade_count
    from {{ ref('stg_trades') }}
    where {{ lake_dates_predicate('date') }}
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
