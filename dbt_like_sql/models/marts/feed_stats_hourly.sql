-- Feed statistics per exchange · symbol · channel · UTC hour: the per-segment rows of the lake's
-- feed_stats table merged exactly as fluxforge.feed_stats.hourly merges them (the rule's macros,
-- macros/feed_stats_rule.sql, are generated from that module): counts add up, extremes stay
-- extremes, the minute bitmaps are OR-ed; an hour with one row holding latencies keeps its
-- exact quantiles, an hour split over several gets them from the summed latency histogram.
with feed_stats as (

    select * from {{ ref('stg_feed_stats') }}
    where {{ lake_dates_predicate('date') }}

),

hours as (

    select
        exchange,
        symbol,
        channel,
        hour_start_ns,
        count(distinct segment) as segments,
        {%- for column in feed_stats_sums() %}
        cast(sum({{ column }}) as bigint) as {{ adapter.quote(column) }},
        {%- endfor %}
        {%- for column in feed_stats_minima() %}
        min({{ column }}) as {{ column }},
        {%- endfor %}
        {%- for column in feed_stats_maxima() %}
        max({{ column }}) as {{ column }},
        {%- endfor %}
        -- the quantiles of the one row with latencies (replaced below where there are several)
        {%- for column, q in feed_stats_quantiles() %}
        max({{ column }}) filter (where {{ feed_stats_timed() }}) as {{ column }},
        {%- endfor %}
        bit_or(active_minutes) as active_minutes,
        count(*) filter (where {{ feed_stats_timed() }}) as timed_rows
    from feed_stats
    group by exchange, symbol, channel, hour_start_ns

),

split_hours as (

    select exchange, symbol, channel, hour_start_ns, clock_offset_ns, latency_max_ns
    from hours
    where timed_rows > 1

),

segment_bins as (

    select
        feed_stats.exchange,
        feed_stats.symbol,
        feed_stats.channel,
        feed_stats.hour_start_ns,
        unnest(feed_stats.latency_bins) as bin,
        unnest(feed_stats.latency_counts) as n
    from feed_stats
    inner join split_hours using (exchange, symbol, channel, hour_start_ns)
    where {{ feed_stats_timed() }}

),

histograms as (

    select exchange, symbol, channel, hour_start_ns, bin, sum(n) as n
    from segment_bins
    group by exchange, symbol, channel, hour_start_ns, bin

),

cumulative as (

    select
        *,
        sum(n) over (
            partition by exchange, symbol, channel, hour_start_ns
            order by bin
            rows between unbounded preceding and current row
        ) as seen,
        sum(n) over (partition by exchange, symbol, channel, hour_start_ns) as total
    from histograms

),

quantile_bins as (

    -- for each quantile, the bin holding the element of its rank
    select
        exchange,
        symbol,
        channel,
        hour_start_ns,
        {%- for column, q in feed_stats_quantiles() %}
        min(bin) filter (where seen > {{ latency_quantile_rank(q, 'total') }}) as {{ column }}_bin{{ ',' if not loop.last }}
        {%- endfor %}
    from cumulative
    group by exchange, symbol, channel, hour_start_ns

),

merged_quantiles as (

    select
        split_hours.exchange,
        split_hours.symbol,
        split_hours.channel,
        split_hours.hour_start_ns,
        {%- for column, q in feed_stats_quantiles() %}
        {{ latency_quantile_value(
            'quantile_bins.' ~ column ~ '_bin',
            'split_hours.clock_offset_ns',
            'split_hours.latency_max_ns'
        ) }} as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from split_hours
    inner join quantile_bins using (exchange, symbol, channel, hour_start_ns)

),

final as (

    select
        hours.exchange,
        hours.symbol,
        hours.channel,
        cast(make_timestamp(hours.hour_start_ns // 1000) as date) as date,
        make_timestamp(hours.hour_start_ns // 1000) as hour_start,
        hours.hour_start_ns,
        hours.segments,
        hours.messages,
        hours."rows",
        hours.latency_messages,
        {%- for column, q in feed_stats_quantiles() %}
        coalesce(merged_quantiles.{{ column }}, hours.{{ column }}) as {{ column }},
        {%- endfor %}
        hours.latency_max_ns,
        hours.clock_offset_ns,
        hours.negative_latency,
        case
            when hours.latency_messages > 0
                then hours.negative_latency / hours.latency_messages
        end as negative_share,
        hours.timed_rows <= 1 as quantiles_exact,
        hours.gaps,
        hours.reconnects,
        {{ feed_stats_silent_minutes('hours.active_minutes') }} as silent_minutes,
        hours.first_ts_recv,
        hours.last_ts_recv
    from hours
    left join merged_quantiles using (exchange, symbol, channel, hour_start_ns)

)

select * from final
where {{ dates_predicate('date') }}
