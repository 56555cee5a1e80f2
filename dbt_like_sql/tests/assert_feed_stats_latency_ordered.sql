-- Latency figures of an hour are ordered: offset (the minimum) <= p50 <= p90 <= p99 <= max,
-- present exactly when the hour has messages with a venue time, and no more negative
-- latencies than such messages. Returns the offending hours.
select *
from {{ ref('feed_stats_hourly') }}
where
    (latency_messages > 0) != (latency_p50_ns is not null)
    or (latency_messages > 0) != (latency_max_ns is not null)
    or negative_latency > latency_messages
    or not (
        clock_offset_ns <= latency_p50_ns
        and latency_p50_ns <= latency_p90_ns
        and latency_p90_ns <= latency_p99_ns
        and latency_p99_ns <= latency_max_ns
    )
