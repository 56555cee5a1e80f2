-- Every bar's high is its highest price and low its lowest: open and close lie inside [low, high].
-- (a Dagster asset check of bars_1d: the last model it reads)
{{ config(meta={'dagster': {'ref': {'name': 'bars_1d'}}}) }}

with bars as (

    select interval, exchange, symbol, bar_start_ns, open, high, low, close
    from {{ ref('bars_1m') }}
    union all
    select interval, exchange, symbol, bar_start_ns, open, high, low, close
    from {{ ref('bars_5m') }}
    union all
    select interval, exchange, symbol, bar_start_ns, open, high, low, close
    from {{ ref('bars_1h') }}
    union all
    select interval, exchange, symbol, bar_start_ns, open, high, low, close
    from {{ ref('bars_1d') }}

),

final as (

    select *
    from bars
    where low > high
        or open < low or open > high
        or close < low or close > high

)

select * from final
