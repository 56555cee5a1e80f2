-- Feed statistics as the refinery writes them: one row per segment · exchange · symbol ·
-- channel · UTC hour (receive time), with the latency histogram that lets split hours merge.
with source as (

    -- the lake stores times as timestamps (microseconds, UTC); the models compute in int64
    -- ns since the epoch, like the hot store and the reader (fluxforge/tables.py)
    select * replace (epoch_ns(hour) as hour, epoch_ns(first_ts_recv) as first_ts_recv,
        epoch_ns(last_ts_recv) as last_ts_recv) from {{ source('lake', 'feed_stats') }}

),

final as (

    select
        exchange,
        symbol,
        date,
        channel,
        hour as hour_start_ns,
        segment,
        messages,
        "rows",
        first_ts_recv,
        last_ts_recv,
        latency_messages,
        latency_p50_ns,
        latency_p90_ns,
        latency_p99_ns,
        latency_max_ns,
        clock_offset_ns,
        negative_latency,
        latency_bins,
        latency_counts,
        gaps,
        reconnects,
        active_minutes
    from source

)

select * from final
