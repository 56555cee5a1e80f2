"""A small synthetic lake (fluxforge.tables schemas, docs/table-schemas.md layout) for the
hot-store tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from fluxforge import lake
from fluxforge.config import PathNames, config_from_dict
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import SCHEMAS

LAYOUT = Layout(PathNames())
SYMBOLS = (("coinbase", "BTC-USD"), ("kraken", "ETH-USD"))
LEVELS = 30  # more than the hot top-N, so truncation shows


def _ns(day: date, second: int) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9 + (
        second * 10**9
    )


def _trades(day: date, segment_no: int, lines: int) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in SCHEMAS["trades"].names}
    for i in range(lines):
        seq = segment_no * 100_000 + i
        ts = _ns(day, segment_no * 3600 + i)
        # every 3rd line carries two trades; every 5th has no venue trade id
        for k in range(2 if i % 3 == 0 else 1):
            rows["ts_event"].append(ts - 1000 + k)
            rows["ts_recv"].append(ts)
            rows["venue_symbol"].append("X")
            rows["trade_id"].append("" if i % 5 == 0 else f"t{seq}-{k}")
            rows["price"].append(Decimal(100 + (i % 7)) + Decimal("0.000000000001") * k)
            rows["size"].append(Decimal("0.5") + Decimal(k))
            rows["side"].append("buy" if i % 2 else "sell")
            rows["seq"].append(seq)
    return pa.table(rows, schema=SCHEMAS["trades"])


def _quotes(day: date, segment_no: int, lines: int) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in SCHEMAS["quotes"].names}
    for i in range(lines):
        ts = _ns(day, segment_no * 3600 + i)
        rows["ts_event"].append(ts - 10)
        rows["ts_recv"].append(ts)
        rows["venue_symbol"].append("X")
        rows["bid_px"].append(Decimal("99.5"))
        rows["bid_sz"].append(Decimal(i + 1))
        rows["ask_px"].append(Decimal("100.5"))
        rows["ask_sz"].append(Decimal("2"))
        rows["last"].append(None if i % 4 == 0 else Decimal("100"))
        rows["seq"].append(segment_no * 100_000 + i)
    return pa.table(rows, schema=SCHEMAS["quotes"])


def _snapshots(day: date, segment_no: int, count: int) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in SCHEMAS["book_snapshots"].names}
    for i in range(count):
        ts = _ns(day, segment_no * 3600 + i * 60)
        rows["ts_event"].append(ts)
        rows["ts_recv"].append(ts)
        rows["venue_symbol"].append("X")
        rows["depth"].append(LEVELS)
        rows["bid_px"].append([Decimal(100 - j) for j in range(LEVELS)])
        rows["bid_sz"].append([Decimal("1.25")] * LEVELS)
        rows["ask_px"].append([Decimal(101 + j) for j in range(LEVELS)])
        rows["ask_sz"].append([Decimal("0.000000000001")] * LEVELS)
        rows["reason"].append("sod" if i == 0 else "periodic")
        rows["book_epoch"].append(1)
        rows["update_id"].append(-1)
        rows["seq"].append(segment_no * 100_000 + i * 10)
    return pa.table(rows, schema=SCHEMAS["book_snapshots"])


def build_lake(root: Path, days: list[date], segments: int = 2, lines: int = 20) -> LocalStorage:
    """Parts for every (exchange, symbol, day, segment) of trades, quotes and book_snapshots."""
    storage = LocalStorage(root)
    for day in days:
        for exchange, symbol in SYMBOLS:
            for seg in range(segments):
                stem = f"segment_{day:%Y%m%d}T{seg:02d}_{seg + 1:05d}"
                for table, data in (
                    ("trades", _trades(day, seg, lines)),
                    ("quotes", _quotes(day, seg, lines)),
                    ("book_snapshots", _snapshots(day, seg, 3)),
                ):
                    lake.write_part(
                        storage, LAYOUT, table, exchange, symbol, day.isoformat(), stem, data, 1000
                    )
    return storage


def lake_rows(storage: LocalStorage, table: str, days: list[date]) -> int:
    wanted = {f"date={d.isoformat()}" for d in days}
    return sum(
        lake.read_file(storage, key, table).num_rows
        for key in lake.list_parts(storage, table)
        if any(w in key for w in wanted)
    )


def config(root: Path, dsn: str, hot_days: int = 30, intervals=("1m", "1h")):
    return config_from_dict(
        {
            "storage": {"backend": "local", "base_dir": str(root)},
            "lifecycle": {"hot_days": hot_days, "hot_intervals": list(intervals)},
            "hot_store": {"dsn": dsn},
        },
        environ={},
    )
