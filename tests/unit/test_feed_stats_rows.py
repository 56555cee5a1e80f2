"""``feed_stats.segment_parts`` per channel and hour: rows and minute bitmaps counted the plain
way (a row's hour and minute from its own receive time), whether the rows come in receive
order (the cut-at-minute-bounds path) or not (the per-row path)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fluxforge import feed_stats
from fluxforge.tables import TRADES

HOUR_NS = feed_stats.HOUR_NS
MINUTE_NS = feed_stats.MINUTE_NS


def _trades(recv: np.ndarray) -> pa.Table:
    n = len(recv)
    return pa.table(
        {
            "ts_event": recv - 5_000_000,
            "ts_recv": recv,
            "venue_symbol": ["BTC-USD"] * n,
            "trade_id": [str(i) for i in range(n)],
            "price": pa.array([1] * n).cast(TRADES.field("price").type),
            "size": pa.array([1] * n).cast(TRADES.field("size").type),
            "side": ["buy"] * n,
            "seq": np.arange(n, dtype=np.int64),
        },
        schema=TRADES,
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_segment_parts_rows_and_minutes_per_hour_equal_the_plain_count(shuffle: bool) -> None:
    rng = np.random.default_rng(7)
    base = 480_000 * HOUR_NS
    # minutes 0, 1, 2, 7, 59 of one hour and 3, 4 of the next, several rows in most of them
    offsets = [0, 1, 1, 2, 7, 7, 7, 59, 63, 64, 64]
    recv = np.array(
        [base + m * MINUTE_NS + int(rng.integers(0, MINUTE_NS)) for m in offsets], np.int64
    )
    recv.sort()
    if shuffle:
        rng.shuffle(recv)
    rows = feed_stats.segment_parts(
        {("trades", "coinbase", "BTC-USD", "2024-10-04"): [_trades(recv)]}, [], "src/seg"
    )
    table = rows[("coinbase", "BTC-USD", "2024-10-04")].to_pylist()
    got = {r["hour"] // HOUR_NS: (r["rows"], r["active_minutes"]) for r in table}
    want: dict[int, tuple[int, int]] = {}
    for t in recv.tolist():
        hour, minute = t // HOUR_NS, t % HOUR_NS // MINUTE_NS
        count, bits = want.get(hour, (0, 0))
        want[hour] = (count + 1, bits | 1 << minute)
    assert got == want
    assert sorted(got) == [480_000, 480_001]


def test_segment_parts_quantiles_and_partitions_equal_numpy_per_instrument_and_hour() -> None:
    """p50/p90/p99 of each row are numpy's ``np.quantile`` (linear) rounded to the ns, on
    latencies of every sign and count (one message up to many, ties at the interpolation
    points), and each partition's rows are its own (one table is cut per partition)."""
    rng = np.random.default_rng(11)
    base = 480_000 * HOUR_NS
    parts = {}
    want = {}
    for k, n in enumerate([1, 2, 3, 7, 10, 101, 999]):
        sym = f"S{k}-USD"
        recv = np.sort(base + rng.integers(0, 2 * HOUR_NS, n)).astype(np.int64)
        small = k % 2 == 0  # many equal latencies: interpolation between ties
        lat = rng.integers(-3, 4, n) * 1_000 if small else rng.integers(-(10**6), 10**9, n)
        lat[lat == 0] = 7  # a zero latency would read as "no venue time"
        table = _trades(recv).set_column(0, "ts_event", pa.array(recv - lat))
        parts[("trades", "coinbase", sym, "2024-10-04")] = [table]
        for hour in np.unique(recv // HOUR_NS).tolist():
            mine = lat[recv // HOUR_NS == hour]
            want[(sym, hour)] = (
                np.rint(np.quantile(mine, feed_stats.QUANTILES)).astype(int).tolist()
            )
    rows = feed_stats.segment_parts(parts, [], "src/seg")
    assert sorted(rows) == sorted(("coinbase", s, "2024-10-04") for _, _, s, _ in parts)
    got = {}
    for (_, sym, _), table in rows.items():
        for r in table.to_pylist():
            key = (sym, r["hour"] // HOUR_NS)
            got[key] = [r["latency_p50_ns"], r["latency_p90_ns"], r["latency_p99_ns"]]
    assert got == want
