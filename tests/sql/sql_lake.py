"""A small hand-made lake (fluxforge.tables schemas, hive layout of docs/table-schemas.md) and a
config on it.

A plain module (not conftest) so the tests can import its constants under a unique name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from fluxforge import lake
from fluxforge.config import Config, config_from_dict
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import SCHEMAS

NS = 1_000_000_000
DAY1 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * NS
DAY2 = DAY1 + 86_400 * NS


@dataclass(frozen=True)
class Trade:
    exchange: str
    symbol: str
    ts: int
    price: str
    size: str
    trade_id: str
    seq: int
    side: str = "buy"
    part: str = "segment_20240101T00_00001"


# ts_recv = ts_event + 1 ms; one duplicate (same trade id, later part) must be ignored
TRADES = [
    Trade("coinbase", "BTC-USD", DAY1 + 5 * NS, "100.5", "1", "1", 1),
    Trade("coinbase", "BTC-USD", DAY1 + 20 * NS, "101.25", "2", "2", 2, "sell"),
    Trade("coinbase", "BTC-USD", DAY1 + 50 * NS, "99.75", "0.5", "3", 3),
    Trade("coinbase", "BTC-USD", DAY1 + 61 * NS, "100", "1", "4", 4),
    Trade("coinbase", "BTC-USD", DAY1 + 299 * NS, "100.000000000001", "0.25", "5", 5),
    Trade("coinbase", "BTC-USD", DAY1 + 3605 * NS, "102", "3", "6", 6),
    Trade(
        "coinbase",
        "BTC-USD",
        DAY1 + 20 * NS,
        "101.25",
        "2",
        "2",
        2,
        "sell",
        part="segment_20240101T00_00002",
    ),
    Trade("coinbase", "BTC-USD", DAY2 + 10 * NS, "110", "1", "7", 7),
    Trade("binance", "ETH-USDT", DAY1 + 30 * NS, "2000.5", "0.1", "a", 1),
]
DUPLICATES = 1


def _d(text: str) -> Decimal:
    return Decimal(text)


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts // NS, UTC).strftime("%Y-%m-%d")


def _write(
    storage: LocalStorage, layout: Layout, table: str, rows: list[dict], ex, sym, date, part
):
    tbl = pa.Table.from_pylist(rows, schema=SCHEMAS[table])
    lake.write_part(storage, layout, table, ex, sym, date, part, tbl, 128_000)


def build_lake(root: Path) -> Config:
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(root)}}, environ={})
    storage = LocalStorage(root)
    layout = Layout.of(cfg.storage.etl_output)
    groups: dict[tuple, list[dict]] = {}
    for t in TRADES:
        key = (t.exchange, t.symbol, _date(t.ts + NS // 1000), t.part)
        groups.setdefault(key, []).append(
            {
                "ts_event": t.ts,
                "ts_recv": t.ts + 1_000_000,
                "venue_symbol": t.symbol.replace("-", ""),
                "trade_id": t.trade_id,
                "price": _d(t.price),
                "size": _d(t.size),
                "side": t.side,
                "seq": t.seq,
            }
        )
    for (ex, sym, date, part), rows in groups.items():
        _write(storage, layout, "trades", rows, ex, sym, date, part)

    def snap(ts, bids, asks, reason="periodic"):
        return {
            "ts_event": ts,
            "ts_recv": ts + 1_000_000,
            "venue_symbol": "BTCUSD",
            "depth": 50,
            "bid_px": [_d(p) for p, _ in bids],
            "bid_sz": [_d(s) for _, s in bids],
            "ask_px": [_d(p) for p, _ in asks],
            "ask_sz": [_d(s) for _, s in asks],
            "reason": reason,
            "book_epoch": 1,
            "update_id": -1,
        }

    snaps = [
        snap(DAY1, [("99", "1"), ("98", "2")], [("101", "1.5")], "sod"),
        snap(DAY1 + 60 * NS, [("100", "1")], [("100.5", "2"), ("101", "3")]),
        snap(DAY1 + 3600 * NS, [("101", "4")], [("102", "1")]),
    ]
    _write(storage, layout, "book_snapshots", snaps, "coinbase", "BTC-USD", "2024-01-01", "p1")
    deltas = [
        {
            "ts_event": DAY1 + i * NS,
            "ts_recv": DAY1 + i * NS + 1_000_000,
            "venue_symbol": "BTCUSD",
            "side": "bid" if i % 2 else "ask",
            "price": _d("100"),
            "size": _d("1"),
            "update_id": i,
            "is_snapshot": False,
            "book_epoch": 1,
            "seq": i,
        }
        for i in range(1, 4)
    ]
    _write(storage, layout, "book_deltas", deltas, "coinbase", "BTC-USD", "2024-01-01", "p1")
    gaps = [
        {
            "channel": "book",
            "ts_from": DAY1 + 3700 * NS,
            "ts_to": DAY1 + 3702 * NS,
            "cause": "chain_break",
            "book_epoch": 1,
            "detail": "pu != u",
            "segment": "segment_20240101T01_00003.ndjson",
        }
    ]
    _write(storage, layout, "gap_ledger", gaps, "coinbase", "BTC-USD", "2024-01-01", "p1")
    return cfg
