"""book_at(T) latency on a synthetic day, next to a replay-from-midnight baseline.

Builds one UTC day of Coinbase-shaped book updates (several symbols, 24 h; the synthetic
source's own book simulator), runs it through the real pipeline (raw segments, one per hour ->
``process_ready`` -> Parquet lake with 60 s injected snapshots), then times ``Reader.book_at``
at random instants and, on the same instants, a baseline that starts from the day's first
snapshot and replays every delta up to T. Both answers are compared (they must agree).

    uv run python benchmarks/bench_book_at.py [--rate 10] [--symbols 3] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime

import orjson
import pyarrow.compute as pc

from fluxforge.config import config_from_dict
from fluxforge.lake import read_table
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, open_storage
from ingestion_daemon.sources.synthetic import _Book, iso_ns

DAY = datetime(2026, 3, 2, tzinfo=UTC)
DAY_NS = int(DAY.timestamp()) * 1_000_000_000
HOUR_NS = 3600 * 1_000_000_000


def build_day(cfg, symbols: list[str], rate_per_symbol: float, seed: int = 7) -> int:
    rng = random.Random(seed)
    books = {s: _Book(s, rng, 50) for s in symbols}
    store = open_storage(cfg.storage.ingestion)
    layout = Layout.of(cfg.storage.ingestion)
    step = int(1e9 / (rate_per_symbol * len(symbols)))
    seq = 0
    total = 0
    for hour in range(24):
        lines = []
        start = DAY_NS + hour * HOUR_NS
        if hour == 0:
            for sym, book in books.items():
                seq += 1
                ev = {
                    "type": "snapshot",
                    "product_id": sym,
                    "updates": book.snapshot(iso_ns(start)),
                }
                frame = {"channel": "l2_data", "timestamp": iso_ns(start), "sequence_num": seq,
                         "events": [ev]}  # fmt: skip
                lines.append(encode_envelope(start, "bench", "coinbase", seq, "msg",
                                             orjson.dumps(frame)))  # fmt: skip
        for ts in range(start + 1, start + HOUR_NS, step):
            book = books[symbols[rng.randrange(len(symbols))]]
            t = iso_ns(ts)
            seq += 1
            ev = {"type": "update", "product_id": book.symbol, "updates": book.update(t)}
            frame = {"channel": "l2_data", "timestamp": t, "sequence_num": seq, "events": [ev]}
            lines.append(encode_envelope(ts, "bench", "coinbase", seq, "msg", orjson.dumps(frame)))
        total += len(lines)
        name = segment_name(datetime.fromtimestamp(start / 1e9, tz=UTC), hour + 1)
        store.write_bytes(layout.segment("ready", "bench", name), b"".join(lines))
    return total


def baseline_book_at(deltas_by_symbol, symbol: str, t: int, depth: int):
    """Replay from midnight: the day's first (exchange) snapshot, then every delta up to T."""
    d = deltas_by_symbol[symbol]
    n = int(pc.sum(pc.less_equal(d["ts_recv"], t)).as_py() or 0)
    bids: dict = {}
    asks: dict = {}
    for side, price, size in zip(
        d["side"].slice(0, n).to_pylist(),
        d["price"].slice(0, n).to_pylist(),
        d["size"].slice(0, n).to_pylist(),
        strict=True,
    ):
        book = bids if side == "bid" else asks
        if size:
            book[price] = size
        else:
            book.pop(price, None)
    return sorted(bids.items(), reverse=True)[:depth], sorted(asks.items())[:depth]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10.0, help="book updates/s per symbol")
    ap.add_argument("--symbols", type=int, default=3)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--depth", type=int, default=10)
    args = ap.parse_args()
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "AVAX-USD", "LINK-USD"][: args.symbols]
    with tempfile.TemporaryDirectory(prefix="bench_book_at_") as tmp:
        cfg = config_from_dict({"storage": {"backend": "local", "base_dir": tmp}}, environ={})
        t0 = time.perf_counter()
        lines = build_day(cfg, symbols, args.rate)
        t1 = time.perf_counter()
        report = process_ready(cfg)
        t2 = time.perf_counter()
        print(f"day: {lines:,} raw lines, {len(symbols)} symbols, 24 h; built in {t1 - t0:.1f}s, "
              f"processed in {t2 - t1:.1f}s ({report.rows['book_deltas']:,} deltas, "
              f"{report.rows['book_snapshots']:,} snapshots)")  # fmt: skip
        reader = Reader(cfg)
        store = open_storage(cfg.storage.etl_output)
        deltas = {}
        for sym in symbols:
            tbl = read_table(store, "book_deltas", exchange="coinbase", symbol=sym)
            deltas[sym] = tbl.take(pc.sort_indices(tbl, [("seq", "ascending")]))
        rng = random.Random(1)
        fast, slow = [], []
        for _ in range(args.queries):
            sym = rng.choice(symbols)
            t = DAY_NS + rng.randrange(60 * 1_000_000_000, 24 * HOUR_NS - 1)
            a = time.perf_counter()
            got = reader.book_at("coinbase", sym, t, args.depth)
            b = time.perf_counter()
            want = baseline_book_at(deltas, sym, t, args.depth)
            c = time.perf_counter()
            assert (got.bids, got.asks) == want, f"book_at disagrees with replay at {sym} {t}"
            fast.append((b - a) * 1e3)
            slow.append((c - b) * 1e3)
        p50f, p99f, p50s, p99s = pct(fast, 50), pct(fast, 99), pct(slow, 50), pct(slow, 99)
        print(f"book_at (snapshot + <=60 s of deltas): p50 {p50f:.1f} ms, p99 {p99f:.1f} ms")
        print(f"baseline replay from midnight (deltas already in memory): p50 {p50s:.1f} ms, "
              f"p99 {p99s:.1f} ms")  # fmt: skip
        print(f"ratio baseline/book_at: p50 {p50s / p50f:.1f}x, p99 {p99s / p99f:.1f}x; "
              f"target p50 <= 50 ms: {'met' if p50f <= 50 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
