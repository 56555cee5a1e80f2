"""Lifecycle rotation throughput next to a plain ``COPY ... TO`` of the same rows, same run.

Starts a local PostgreSQL (fluxforge.pgserver, temp data dir) unless ``--dsn`` is given, fills
one day partition of the hot ``trades`` table with N synthetic rows (generate_series, so the
setup is fast), then times

- baseline: ``COPY <partition> (columns) TO STDOUT (FORMAT csv)`` drained into memory;
- rotation: ``lifecycle.execute`` of that partition: locked export, SHA-256, Parquet (zstd) write
  to a local cold dir, footer verification, DROP, ANALYZE.

and prints rows/s of both and the ratio (target: rotation >= 1 M rows/s).

    uv run python benchmarks/bench_rotation.py [--rows 2000000] [--repeat 2] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from fluxforge.config import PathNames
from fluxforge.hot import HotStore, partition_name
from fluxforge.lifecycle import copy_out_blocks, execute, plan
from fluxforge.pgserver import LocalPostgres
from fluxforge.storage import Layout, LocalStorage

DAY = date(2024, 1, 2)
DAY_NS = 1_704_153_600 * 10**9


@contextlib.contextmanager
def server(dsn: str | None, tmp: Path) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp.chmod(0o711)  # as root the server runs as an unprivileged user that must reach it
    pg = LocalPostgres(
        tmp / "pg", port=port, settings={"fsync": "off", "shared_buffers": "'256MB'"}
    )
    pg.start()
    try:
        yield pg.ensure_database("bench")
    finally:
        pg.stop("fast")


def fill(hot: HotStore, rows: int) -> None:
    hot.ensure_schema()
    with hot.connect() as conn:
        hot.drop_partition(conn, "trades", DAY)
        hot.ensure_partition(conn, "trades", DAY)
        conn.execute(
            """
            INSERT INTO trades (day, exchange, symbol, ts_event, ts_recv, venue_symbol, trade_id,
                                price, size, side, seq, ord)
            SELECT %s, 'coinbase', CASE WHEN i %% 4 = 0 THEN 'ETH-USD' ELSE 'BTC-USD' END,
                   %s + i * 1000000 - 500, %s + i * 1000000, 'BTC-USD', 't' || i,
                   (40000 + (i %% 977) * 0.01)::numeric,
                   ((i %% 113) * 0.0001 + 0.0001)::numeric,
                   CASE WHEN i %% 2 = 0 THEN 'buy' ELSE 'sell' END, i, 0
            FROM generate_series(1::bigint, %s) AS i
            """,
            (DAY, DAY_NS, DAY_NS, rows),
        )
    with hot.connect(autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE trades")


def baseline(hot: HotStore, fmt: str = "csv") -> tuple[float, int]:
    """Plain COPY of the partition's columns, drained into memory (same libpq loop as the
    rotation's export, so only the work after the drain differs)."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in hot.columns("trades"))
    query = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT {})").format(
        sql.Identifier(partition_name("trades", DAY)), cols, sql.SQL(fmt)
    )
    with hot.connect() as conn:
        t0 = time.perf_counter()
        size = sum(len(block) for block in copy_out_blocks(conn, query, 4 << 20))
        return time.perf_counter() - t0, size


def rotation(hot: HotStore, storage: LocalStorage, layout: Layout, rows: int) -> tuple[float, int]:
    p = plan({"trades": {DAY: rows}}, date(2024, 2, 1), 1, layout)
    t0 = time.perf_counter()
    result = execute(p, hot, storage)
    elapsed = time.perf_counter() - t0
    assert result.rows == {"trades": rows}, result.rows
    return elapsed, result.bytes_written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dsn", default=None, help="existing database (default: a temp server)")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp,
        server(args.dsn, Path(tmp)) as dsn,
    ):
        hot = HotStore(dsn, intervals=())
        storage = LocalStorage(Path(tmp) / "cold")
        layout = Layout(PathNames())
        base, base_bin, rot = [], [], []
        for _ in range(args.repeat):
            fill(hot, args.rows)
            secs, copy_bytes = baseline(hot)
            base.append(secs)
            base_bin.append(baseline(hot, "binary")[0])
            shutil.rmtree(storage.root, ignore_errors=True)  # a fresh cold write every time
            secs, parquet_bytes = rotation(hot, storage, layout, args.rows)
            rot.append(secs)
            with psycopg.connect(dsn) as conn:
                left = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
            assert left == 0, f"{left} rows still hot after the rotation"
        b, r = min(base), min(rot)
        print(f"rows: {args.rows:,} (trades, one day partition)")
        mrows_b, mrows_r = args.rows / b / 1e6, args.rows / r / 1e6
        print(f"plain COPY TO (csv):   {mrows_b:6.2f} M rows/s  ({copy_bytes / b / 1e6:.0f} MB/s)")
        print(f"plain COPY TO (binary): {args.rows / min(base_bin) / 1e6:5.2f} M rows/s")
        mb = parquet_bytes / 1e6
        print(f"rotation (end to end): {mrows_r:6.2f} M rows/s  (parquet {mb:.1f} MB)")
        print(f"ratio rotation / COPY: {b / r:.2f}")


if __name__ == "__main__":
    main()
