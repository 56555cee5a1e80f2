"""One definition of a bar (fluxforge/bar_rule.py): the same trades through the three engines,
the SQL models (dbt on DuckDB over a Delta lake), the hot store (PostgreSQL) and the reader
(Arrow), give equal bars; and the dbt macros are the module's output."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from delta_fixture import append

from fluxforge import bar_rule, sql_models
from fluxforge.config import config_from_dict
from fluxforge.hot import HotStore
from fluxforge.query import bars_from_trades
from fluxforge.tables import SCHEMAS

NS = 1_000_000_000
M0 = int(datetime(2024, 1, 1, 10, 0, tzinfo=UTC).timestamp()) * NS
DAY = date(2024, 1, 1)
PART = {"exchange": "coinbase", "symbol": "BTC-USD", "date": DAY.isoformat()}


def trade(te: int, recv: int, seq: int, trade_id: str | None, price: str, size: str = "1"):
    return {
        "ts_event": te,
        "ts_recv": recv,
        "venue_symbol": "BTC-USD",
        "trade_id": trade_id,
        "price": Decimal(price),
        "size": Decimal(size),
        "side": "buy",
        "seq": seq,
    }


# in receive order, as the lake holds them; each row tests one clause of the rule
TRADES = [
    # one line (same ts_recv, seq) with two trades at the same event time: ids compare as
    # numbers ("9" before "10"), so the open is 101, not 100 (bytewise "10" < "9")
    trade(M0 + 1 * NS, M0 + 2 * NS, 1, "10", "100"),
    trade(M0 + 1 * NS, M0 + 2 * NS, 1, "9", "101", "2"),
    # no event time: bucketed by its receive time (second 30)
    trade(0, M0 + 30 * NS, 2, "11", "99", "0.5"),
    # trades without an id all count; tied on time and line, the lower price comes first
    trade(M0 + 40 * NS, M0 + 41 * NS, 3, None, "98.5"),
    trade(M0 + 40 * NS, M0 + 41 * NS, 3, "", "97"),
    # a reconnect repeats trade "10" later: it counts once, at its first receipt
    trade(M0 + 1 * NS, M0 + 50 * NS, 4, "10", "100"),
    # the next minute; an event time earlier than the previous line's (venue clock order)
    trade(M0 + 61 * NS, M0 + 62 * NS, 6, "13", "102", "0.25"),
    trade(M0 + 60 * NS, M0 + 63 * NS, 7, "12", "103", "3"),
]
COLUMNS = ("bar_start_ns", "open", "high", "low", "close", "volume", "trade_count")


def _rows(tbl: pa.Table, names: dict[str, str]) -> list[dict]:
    out = []
    for r in tbl.to_pylist():
        row = {c: r[names.get(c, c)] for c in (*COLUMNS, "vwap")}
        row["vwap"] = float(row["vwap"])
        out.append(row)
    return sorted(out, key=lambda r: r["bar_start_ns"])


def _equal(got: list[dict], want: list[dict]) -> None:
    assert [{c: r[c] for c in COLUMNS} for r in got] == [{c: r[c] for c in COLUMNS} for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["vwap"] == pytest.approx(w["vwap"], rel=1e-12)


def test_bar_rule_dbt_macros_file_is_the_modules_output() -> None:
    path = Path(__file__).resolve().parents[2] / bar_rule.MACROS_PATH
    assert path.read_text() == bar_rule.dbt_macros(), "run: uv run python -m fluxforge.bar_rule"


def test_bars_from_trades_follow_each_clause_of_the_rule() -> None:
    bars = _rows(
        bars_from_trades(pa.Table.from_pylist(TRADES, schema=SCHEMAS["trades"]), 60 * NS),
        {"bar_start_ns": "ts"},
    )
    first, second = bars
    assert first["bar_start_ns"] == M0 and second["bar_start_ns"] == M0 + 60 * NS
    assert (first["open"], first["close"]) == (Decimal(101), Decimal("98.5"))
    assert (first["high"], first["low"]) == (Decimal(101), Decimal(97))
    assert first["trade_count"] == 5 and first["volume"] == Decimal("5.5")
    assert (second["open"], second["close"]) == (Decimal(103), Decimal(102))


@pytest.mark.services
def test_bars_of_the_same_trades_equal_in_dbt_hot_store_and_reader(
    tmp_path: Path, pg_db: str
) -> None:
    table = pa.Table.from_pylist(TRADES, schema=SCHEMAS["trades"])
    reader = _rows(bars_from_trades(table, 60 * NS), {"bar_start_ns": "ts"})

    hot = HotStore(pg_db, ["1m"])
    hot.ensure_schema()
    hot.load("trades", DAY, hot.prepare(table, "trades", PART["exchange"], PART["symbol"]))
    stored = hot.read("bars_1m", PART["exchange"], PART["symbol"], DAY, "ts")
    hot_rows = _rows(stored, {"bar_start_ns": "ts", "trade_count": "trades"})

    cfg = config_from_dict({"storage": {"base_dir": str(tmp_path / "lake")}}, environ={})
    append(tmp_path / "lake" / "processed", "trades", TRADES, PART)
    assert sql_models.run(cfg, select=["+bars_1m"]).ok
    files = sorted(str(p) for p in (tmp_path / "lake/processed/models/bars_1m").rglob("*.parquet"))
    rel = duckdb.sql("select * from read_parquet($f)", params={"f": files})
    dbt_rows = _rows(
        pa.Table.from_pylist([dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]), {}
    )

    assert len(reader) == 2
    _equal(hot_rows, reader)
    _equal(dbt_rows, reader)
