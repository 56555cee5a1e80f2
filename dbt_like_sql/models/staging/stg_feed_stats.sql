-- Feed statistics as the refinery writes them: one row per segment · exchange · symbol ·
-- channel · UTC hour (receive time), with the latency histogram that lets split hours merge.
with source as (

    select * from {{ source('lake', 'feed_stats') }}

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
