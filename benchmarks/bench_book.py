"""Book rebuild throughput: FluxForge's numba BookEngine next to bmoscon's ``order-book``
C extension on the same synthetic L2 stream, same run; prints updates/s and the ratio.

    uv run python benchmarks/bench_book.py [--symbols 4] [--updates 1000000] [--captures DIR]

Stream: per symbol a 500-level-per-side exchange snapshot, then messages of 1-4 level updates
(absolute sizes, ~25% deletions) clustered near a random-walking mid, 6 h of event time, so
the default 60 s interval injects top-50 snapshots all along. "updates" = price levels applied.

Measured:
* engine hot path: ``apply_batch(tables=False)`` on pre-built columnar batches (what the
  "Quality targets" of docs/architecture.md target), snapshot injection included;
* engine with output tables: the same plus the Arrow deltas/snapshots tables (decimal casts);
* ``order-book``: one Python dict-style set/delete per level (the way it is fed), plus a
  top-50 ``to_list`` every 60 s of event time;
* checksum venues: the real Kraken / OKX / Bitget captures replayed many times (each replay
  starts from the venue snapshot), every checksum computed and verified.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

from fluxforge.book import BookBatch, BookEngine, BookStats

REPO = Path(__file__).resolve().parent.parent
S = 1_000_000_000


@njit(cache=True)
def _levels(seed, n_updates, depth0, max_dist):
    """Level updates of an uncrossed, depth-bounded book around a random-walking mid: when the
    mid moves, the level it crosses and the level leaving the depth window are deleted (as a
    venue's diff feed does)."""
    np.random.seed(seed)
    cap = n_updates + 8
    side = np.empty(cap, np.uint8)
    ticks = np.empty(cap, np.int64)
    qty = np.empty(cap, np.int64)
    msg_end = np.empty(cap, np.int64)
    mid = 100_000 + seed * 1000
    n = 0
    m = 0
    while n < n_updates:
        move = np.random.randint(0, 10)
        if move == 0:  # mid up: the best ask is gone, the deepest bid leaves the window
            mid += 1
            side[n], ticks[n], qty[n] = 1, mid, 0
            side[n + 1], ticks[n + 1], qty[n + 1] = 0, mid - max_dist - 1, 0
            n += 2
        elif move == 1:
            mid -= 1
            side[n], ticks[n], qty[n] = 0, mid, 0
            side[n + 1], ticks[n + 1], qty[n + 1] = 1, mid + max_dist + 1, 0
            n += 2
        k = np.random.randint(1, 4)
        for _ in range(k):
            s = np.random.randint(0, 2)
            d = min(np.random.geometric(0.08), max_dist)
            side[n] = s
            ticks[n] = mid - d if s == 0 else mid + d
            qty[n] = 0 if np.random.random() < 0.25 else np.random.randint(1, 500_000)
            n += 1
        msg_end[m] = n
        m += 1
    return side[:n], ticks[:n], qty[:n], msg_end[:m], mid


def synthetic(seed: int, n_updates: int, hours: float = 6.0) -> dict:
    """Columns of one symbol's stream (levels flattened, message offsets)."""
    rng = np.random.default_rng(seed)
    depth0 = 400
    mid0 = 100_000 + seed * 1000  # ticks of 0.01
    side, ticks, qty, msg_end, _ = _levels(seed, n_updates, depth0, depth0)
    n_msgs = len(msg_end)
    snap_side = np.repeat(np.array([0, 1], np.uint8), depth0)
    snap_ticks = np.concatenate([mid0 - 1 - np.arange(depth0), mid0 + 1 + np.arange(depth0)])
    snap_qty = rng.integers(1, 500_000, size=2 * depth0)
    side = np.concatenate([snap_side, side])
    ticks = np.concatenate([snap_ticks, ticks])
    qty = np.concatenate([snap_qty, qty])
    offsets = np.concatenate([[0], 2 * depth0 + np.concatenate([[0], msg_end])])
    t0 = 1_767_225_600 * S + seed  # 2026-01-01
    span = int(hours * 3600 * S)
    ts_event = t0 + np.concatenate([[0], np.sort(rng.integers(1, span, size=n_msgs))])
    prices = [f"{t // 100}.{t % 100:02d}" for t in ticks.tolist()]
    qtys = ["0" if q == 0 else f"{q // 10000}.{q % 10000:04d}" for q in qty.tolist()]
    is_snap = np.zeros(n_msgs + 1, dtype=bool)
    is_snap[0] = True
    return {
        "ts_event": ts_event,
        "ts_recv": ts_event + 1_000_000,
        "level_offsets": offsets,
        "side": side,
        "ticks": ticks,
        "qty": qty,
        "prices": prices,
        "qtys": qtys,
        "is_snapshot": is_snap,
    }


def to_batch(sym: int, cols: dict) -> BookBatch:
    return BookBatch.from_columns(
        ts_event=cols["ts_event"],
        ts_recv=cols["ts_recv"],
        level_offsets=cols["level_offsets"],
        side=cols["side"],
        price_strings=pa.array(cols["prices"], pa.large_string()),
        size_strings=pa.array(cols["qtys"], pa.large_string()),
        venue_symbol=f"SYM{sym}USD",
        channel="book",
        is_snapshot=cols["is_snapshot"],
    )


def run_engine(batches: list[BookBatch], tables: bool) -> tuple[float, BookStats]:
    total = BookStats()
    t = time.perf_counter()
    for i, b in enumerate(batches):
        out = BookEngine("bench", f"SYM{i}-USD", record_tops=False).apply_batch(b, tables=tables)
        total.add(out.stats)
    return time.perf_counter() - t, total


def run_order_book(streams: list[dict], interval: int = 60 * S) -> tuple[float, int]:
    from order_book import OrderBook

    prepared = []
    for cols in streams:
        px = (cols["ticks"] / 100.0).tolist()
        qty = (cols["qty"] / 10000.0).tolist()
        prepared.append(
            (
                px,
                qty,
                cols["side"].tolist(),
                cols["level_offsets"].tolist(),
                cols["ts_event"].tolist(),
            )
        )
    snaps = 0
    t = time.perf_counter()
    for px, qty, side, offs, ts in prepared:
        ob = OrderBook()
        books = (ob.bids, ob.asks)
        last_bucket = -1
        for m in range(len(ts)):
            for i in range(offs[m], offs[m + 1]):
                book = books[side[i]]
                if qty[i] == 0.0:
                    if px[i] in book:
                        del book[px[i]]
                else:
                    book[px[i]] = qty[i]
            bucket = ts[m] // interval
            if bucket > last_bucket:
                last_bucket = bucket
                ob.bids.to_list()[:50]
                ob.asks.to_list()[:50]
                snaps += 1
    return time.perf_counter() - t, snaps


def replayed_capture(captures: Path, venue: str, times: int) -> list[BookBatch]:
    sys.path.insert(0, str(REPO / "tests" / "unit" / "book"))
    import capture_books as cb  # the test-local capture extraction

    books = {
        "kraken": lambda: cb.kraken(captures),
        "okx": lambda: cb.okx_like(captures, "OKX", "OKX.ws.1.0"),
        "bitget": lambda: cb.okx_like(captures, "BITGET", "BITGET.ws.2.0"),
    }[venue]()
    batches = []
    for msgs in books.values():
        span = msgs[-1].ts_recv - msgs[0].ts_recv + S
        stream = [
            dataclasses.replace(m, ts_recv=m.ts_recv + r * span, ts_event=m.ts_event + r * span)
            for r in range(times)
            for m in msgs
        ]
        batches.append(BookBatch.from_messages(stream))
    return batches


def _t(result: tuple) -> float:
    return result[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--updates", type=int, default=1_000_000, help="level updates per symbol")
    ap.add_argument("--captures", type=Path, default=REPO.parent / "shared/data/captures")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (order-book: best of 2)")
    args = ap.parse_args()

    t = time.perf_counter()
    streams = [synthetic(i, args.updates) for i in range(args.symbols)]
    batches = [to_batch(i, c) for i, c in enumerate(streams)]
    n_levels = sum(b.n_levels for b in batches)
    print(
        f"stream: {args.symbols} symbols, {n_levels:,} level updates, "
        f"{sum(len(b) for b in batches):,} messages (built in {time.perf_counter() - t:.1f} s)"
    )

    run_engine([b for b in batches[:1]], tables=False)  # numba compile / cache load
    hot = min(run_engine(batches, tables=False)[0] for _ in range(args.repeat))
    full, stats = min((run_engine(batches, tables=True) for _ in range(args.repeat)), key=_t)
    ob_time, ob_snaps = min((run_order_book(streams) for _ in range(2)), key=_t)
    print(
        f"fluxforge engine (hot path, 60 s snapshots): {n_levels / hot / 1e6:8.2f} M updates/s "
        f"({stats.snapshots} snapshots injected)"
    )
    print(f"fluxforge engine + Arrow output tables:      {n_levels / full / 1e6:8.2f} M updates/s")
    print(
        f"order-book (C ext, fed from Python):         {n_levels / ob_time / 1e6:8.2f} M updates/s "
        f"({ob_snaps} top-50 snapshots)"
    )
    print(
        f"ratio fluxforge/order-book: hot path {ob_time / hot:.1f}x, "
        f"with tables {ob_time / full:.1f}x"
    )

    if args.captures.is_dir():
        for venue, times in (("kraken", 200), ("okx", 300), ("bitget", 300)):
            batches = replayed_capture(args.captures, venue, times)
            levels = sum(b.n_levels for b in batches)
            msgs = sum(len(b) for b in batches)
            el, st = min((run_engine(batches, tables=False) for _ in range(args.repeat)), key=_t)
            assert st.checksum_mismatches == 0, st
            print(
                f"{venue:7s} capture x{times}: {levels / el / 1e6:6.2f} M updates/s, "
                f"{msgs / el / 1e6:5.2f} M msgs/s, {st.checksums_verified:,} checksums "
                f"verified ({levels:,} levels incl. replayed snapshots)"
            )
    else:
        print(f"captures not found at {args.captures}: checksum venues skipped")


if __name__ == "__main__":
    main()
