"""Routine work on a one-day lake vs the same work on a lake with a year of committed history.

Builds one UTC day of Coinbase-shaped data through the real pipeline (synthetic book/trade
segments -> ``process_ready`` -> Delta tables), copies it, and gives the copy a year of history
in the trades, quotes and book tables: for each of `--days` earlier days, `--files-per-day`
per-segment files committed, then compacted into one file in a replacing commit (so the log
holds >= 100,000 added files and hundreds of commits, with checkpoints, like a year of live
data). Files of the history are hard links of today's (the bench measures the log, not disk).

Then, on both lakes, times:
- ready -> visible: ``process_ready`` of one new sealed segment (commit included);
- hot-window discovery: the files ``fluxforge hot load`` takes (log + partition filter);
- one date's SQL input: every file of the refreshed date read through the log;
- ``query trades`` for one day and ``book_at`` (p50 over random instants);
and a 30-day read of per-segment parts vs the same days compacted (one file per day).

    uv run python benchmarks/bench_lake_growth.py [--days 365] [--files-per-day 288]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_book_at import DAY, DAY_NS, HOUR_NS, build_day

from fluxforge import lake as lakemod
from fluxforge.config import config_from_dict
from fluxforge.lake import Lake
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, open_storage

HISTORY_TABLES = ("trades", "quotes", "book_deltas", "book_snapshots")
SYMBOLS = ["BTC-USD", "ETH-USD"]


def _cfg(root: Path):
    return config_from_dict(
        {"storage": {"backend": "local", "base_dir": str(root)}, "sources": []}, environ={}
    )


def _timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of `fn` in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def add_history(root: Path, days: int, files_per_day: int) -> dict[str, int]:
    """`days` earlier days in each history table: per-segment files committed, then compacted."""
    cfg = _cfg(root)
    lk = Lake.of(cfg)
    stats = {"commits": 0, "files_added": 0}
    for table in HISTORY_TABLES:
        today = lk.files(table)
        if not today:
            continue
        prefix = lk.layout.lake_table(table)
        bodies = [root / f.key for f in today]
        compacted = pa.concat_tables([pq.read_table(p) for p in bodies])
        sample = tempfile.mktemp(suffix=".parquet", dir=root)
        pq.write_table(compacted, sample, compression="zstd")
        for back in range(days, 0, -1):
            day = (DAY - timedelta(days=back)).date().isoformat()
            ex, sym = today[0].exchange, today[0].symbol
            part = root / lk.layout.lake_partition(table, ex, sym, day)
            part.mkdir(parents=True, exist_ok=True)
            staged = []
            for i in range(files_per_day):
                src = bodies[i % len(bodies)]
                name = f"part-bench-segment_{day.replace('-', '')}T00_{i:05d}-v1.1-h{i}.parquet"
                os.link(src, part / name)
                staged.append(_staged(table, prefix, part / name, root, ex, sym, day))
            lk.commit(table, staged, metadata={"fluxforge.operation": "bench-history"})
            olds = lk.files(table, ex, sym, day)
            name = f"part-compact-v1.1-{day}.parquet"
            os.link(sample, part / name)
            # replaced on that day, as a live lake's compaction would have: the log keeps
            # tombstones only for the vacuum retention, so old days' do not weigh on it
            when = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
            lk.commit(
                table,
                [_staged(table, prefix, part / name, root, ex, sym, day)],
                remove=olds,
                removed_at_ms=when + 86_400_000,
            )
            stats["commits"] += 2
            stats["files_added"] += files_per_day + 1
        os.unlink(sample)
        lk.table(table).create_checkpoint()
    return stats


def _staged(table, prefix, path: Path, root: Path, ex, sym, day) -> lakemod.Staged:
    key = path.relative_to(root).as_posix()
    rows = pq.read_metadata(path).num_rows
    return lakemod.Staged(
        table, key, key.removeprefix(prefix + "/"), ex, sym, day, rows, path.stat().st_size,
        f'{{"numRecords": {rows}}}',
    )  # fmt: skip


def new_segment(root: Path, counter: int, seq0: int) -> None:
    """One more sealed segment (the day's last hour) in ready/: a few hundred trades."""
    import orjson

    store = open_storage(_cfg(root).storage.ingestion)
    layout = Layout.of(_cfg(root).storage.ingestion)
    start = DAY_NS + 23 * HOUR_NS + 30 * 60 * 10**9 + counter
    lines = []
    for i in range(300):
        ts = start + i * 1_000_000
        when = datetime.fromtimestamp(ts / 1e9, UTC).isoformat()
        trade = {"type": "match", "trade_id": seq0 + i, "product_id": "BTC-USD", "price": "100.5",
                 "size": "0.1", "side": "buy", "time": when}  # fmt: skip
        lines.append(encode_envelope(ts, "bench", "coinbase", seq0 + i, "msg", orjson.dumps(trade)))
    name = segment_name(datetime.fromtimestamp(start / 1e9, tz=UTC), counter)
    store.write_bytes(layout.segment("ready", "bench", name), b"".join(lines))


def measure(root: Path, queries: int, counter: int, seq0: int) -> dict[str, float]:
    cfg = _cfg(root)
    lk = Lake.of(cfg)
    out: dict[str, float] = {}
    new_segment(root, counter, seq0)
    t0 = time.perf_counter()
    report = process_ready(cfg)
    out["ready_to_visible_ms"] = (time.perf_counter() - t0) * 1000
    assert not report.failed, report.failed
    day = DAY.date().isoformat()
    window = ((DAY - timedelta(days=29)).date().isoformat(), "9999-12-31")
    out["hot_window_files_ms"] = _timed(
        lambda: [Lake.of(cfg).files(t, dates=window) for t in HISTORY_TABLES]
    )
    out["sql_date_input_ms"] = _timed(
        lambda: [lakemod.read_table(lk.storage, t, date=day) for t in ("trades", "book_snapshots")]
    )
    reader = Reader(cfg, hot=False)
    start, end = DAY_NS, DAY_NS + 24 * HOUR_NS - 1
    out["query_trades_day_ms"] = _timed(
        lambda: Reader(cfg, hot=False).trades("coinbase", SYMBOLS[0], start, end)
    )
    rng = random.Random(3)
    lat = []
    for _ in range(queries):
        t = DAY_NS + rng.randrange(HOUR_NS, 23 * HOUR_NS)
        t0 = time.perf_counter()
        reader.book_at("coinbase", SYMBOLS[rng.randrange(len(SYMBOLS))], t, 10)
        lat.append((time.perf_counter() - t0) * 1000)
    out["book_at_p50_ms"] = statistics.median(lat)
    out["book_at_p99_ms"] = sorted(lat)[int(0.99 * (len(lat) - 1))]
    return out


def thirty_days(root: Path, files_per_day: int) -> dict[str, float]:
    """30 days of trades as per-segment parts vs compacted, read through the log."""
    import polars as pl

    parts_root, compact_root = root / "parts30", root / "compact30"
    src = _cfg(root)
    today = Lake.of(src).files("trades")
    bodies = [root / f.key for f in today]
    data = pa.concat_tables([pq.read_table(p) for p in bodies])
    for target, per_day in ((parts_root, files_per_day), (compact_root, 1)):
        lk = Lake.of(_cfg(target))
        lk.ensure("trades")
        prefix = lk.layout.lake_table("trades")
        for back in range(30):
            day = (DAY - timedelta(days=back)).date().isoformat()
            part = target / lk.layout.lake_partition("trades", "coinbase", SYMBOLS[0], day)
            part.mkdir(parents=True, exist_ok=True)
            staged = []
            step = max(1, -(-data.num_rows // per_day))
            for i in range(per_day):
                piece = data.slice(i * step, step) if per_day > 1 else data
                path = part / f"part-b-{i:05d}.parquet"
                pq.write_table(piece, path, compression="zstd")
                staged.append(_staged("trades", prefix, path, target, "coinbase", SYMBOLS[0], day))
            lk.commit("trades", staged)
    first = (DAY - timedelta(days=29)).date().isoformat()
    out = {}
    for label, target in (("parts", parts_root), ("compacted", compact_root)):
        store = open_storage(_cfg(target).storage.etl_output)
        out[f"read30_{label}_ms"] = _timed(
            lambda store=store: lakemod.read_table(store, "trades", dates=(first, "9999-12-31")), 3
        )
        uri = lakemod.table_uri(store, None, "trades")
        out[f"polars30_{label}_ms"] = _timed(lambda uri=uri: pl.read_delta(uri), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--files-per-day", type=int, default=288)
    ap.add_argument("--rate", type=float, default=4.0, help="book updates/s per symbol")
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ff-lake-growth-") as tmp:
        base = Path(tmp)
        day_root, year_root = base / "day", base / "year"
        build_day(_cfg(day_root), SYMBOLS, args.rate)
        new_segment(day_root, 80_001, 10**8)  # the day's trades
        t0 = time.perf_counter()
        assert not process_ready(_cfg(day_root)).failed
        print(f"one day processed in {time.perf_counter() - t0:.1f} s")
        shutil.copytree(day_root, year_root)
        t0 = time.perf_counter()
        hist = add_history(year_root, args.days, args.files_per_day)
        trades = Lake.of(_cfg(year_root)).table("trades")
        print(
            f"history: {args.days} days, {hist['files_added']:,} files added in "
            f"{hist['commits']:,} commits ({time.perf_counter() - t0:.0f} s); trades table at "
            f"version {trades.version()}"
        )
        # alternate the two lakes and keep each figure's best of two rounds: a busy machine
        # then slows both sides alike instead of one
        rounds = [
            (measure(day_root, args.queries, 90_001 + r, 10**9 + r * 10**6),
             measure(year_root, args.queries, 90_001 + r, 10**9 + r * 10**6))
            for r in range(2)
        ]  # fmt: skip
        small = {k: min(r[0][k] for r in rounds) for k in rounds[0][0]}
        big = {k: min(r[1][k] for r in rounds) for k in rounds[0][1]}
        print(f"\n{'operation':<24}{'one-day lake':>14}{'year lake':>12}{'ratio':>8}  target")
        for key in small:
            ratio = big[key] / small[key] if small[key] else float("nan")
            target = {
                "ready_to_visible_ms": "<= 10 s",
                "book_at_p50_ms": "<= 50 ms, <= 1.3x",
                "book_at_p99_ms": "",
            }.get(key, "<= 1.3x")
            print(f"{key:<24}{small[key]:>12.1f}ms{big[key]:>10.1f}ms{ratio:>7.2f}x  {target}")
        thirty = thirty_days(day_root, args.files_per_day)
        print(f"\n30-day read of trades, {args.files_per_day} parts/day vs compacted (1 file/day):")
        for tool in ("read30", "polars30"):
            parts, comp = thirty[f"{tool}_parts_ms"], thirty[f"{tool}_compacted_ms"]
            print(f"  {tool:<10} parts {parts:8.1f} ms   compacted {comp:7.1f} ms   "
                  f"speed-up {parts / comp:5.1f}x (target >= 10x)")  # fmt: skip


if __name__ == "__main__":
    main()
