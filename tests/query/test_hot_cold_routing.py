"""Range queries straddling the PostgreSQL hot store and the lake: no duplicate, no hole."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from fluxforge import sql_models
from fluxforge.captures import merge_captures
from fluxforge.config import Config, config_from_dict
from fluxforge.hot import load_lake
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, LocalStorage

pytestmark = pytest.mark.services
DAY_NS = 86_400 * 10**9


def _shift(payload: bytes, days: int) -> bytes:
    """OKX frame moved by whole days: event times and trade ids (prices, checksums untouched)."""
    msg = orjson.loads(payload)
    for row in msg.get("data", []) if isinstance(msg.get("data"), list) else []:
        if isinstance(row, dict) and "ts" in row:
            row["ts"] = str(int(row["ts"]) + days * 86_400_000)
        if isinstance(row, dict) and "tradeId" in row:  # a copy is a new trade, not a repeat
            row["tradeId"] = str(int(row["tradeId"]) + days * 10**9)
    return orjson.dumps(msg)


@pytest.fixture
def two_day_lake(captures: Path, tmp_path: Path) -> tuple[Config, list[int]]:
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    storage = LocalStorage(tmp_path)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    seq = 0
    bounds = []
    for day in (0, 1):
        lines = []
        for r in recs:
            seq += 1
            ts = r.ts + day * DAY_NS
            lines.append(encode_envelope(ts, "okx", "okx", seq, "msg", _shift(r.payload, day)))
        hour = datetime.fromtimestamp((recs[0].ts + day * DAY_NS) // 10**9, tz=UTC)
        storage.write_bytes(
            layout.segment("ready", "okx", segment_name(hour, day + 1)), b"".join(lines)
        )
        bounds.append(recs[0].ts + day * DAY_NS)
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(tmp_path)}}, environ={})
    assert not process_ready(cfg).failed
    assert sql_models.run(cfg).ok
    return cfg, bounds


def test_trades_range_straddling_hot_and_cold_equals_lake_only(two_day_lake, pg_db: str) -> None:
    cfg, (day1, day2) = two_day_lake
    start, end = day1 - 3600 * 10**9, day2 + 3600 * 10**9
    lake_only = Reader(cfg).trades("okx", "BTC-USDT", start, end)
    today = datetime.fromtimestamp(day2 // 10**9, tz=UTC).date()
    report = load_lake(cfg, pg_db, hot_days=1, today=today)
    assert report.days == [today.isoformat()]
    hot_cfg = cfg.model_copy(update={"hot_store": cfg.hot_store.model_copy(update={"dsn": pg_db})})
    reader = Reader(hot_cfg)
    assert reader.hot.days("trades") == [today]
    routed = reader.trades("okx", "BTC-USDT", start, end)
    assert routed.num_rows == lake_only.num_rows > 0
    assert routed.equals(lake_only)
    # half of the rows really came from each tier
    on_day2 = pc.sum(pc.greater_equal(routed["ts_recv"], day2)).as_py()
    assert 0 < on_day2 < routed.num_rows


def test_bars_straddling_hot_and_cold_have_no_duplicate_or_hole(two_day_lake, pg_db) -> None:
    cfg, (day1, day2) = two_day_lake
    start, end = day1 - 3600 * 10**9, day2 + 3600 * 10**9
    lake_only = Reader(cfg).bars("okx", "BTC-USDT", start, end, "1m")
    today = datetime.fromtimestamp(day2 // 10**9, tz=UTC).date()
    load_lake(cfg, pg_db, hot_days=1, today=today)
    hot_cfg = cfg.model_copy(update={"hot_store": cfg.hot_store.model_copy(update={"dsn": pg_db})})
    routed = Reader(hot_cfg).bars("okx", "BTC-USDT", start, end, "1m")
    assert routed.num_rows == lake_only.num_rows >= 2
    assert routed["ts"].to_pylist() == lake_only["ts"].to_pylist()
    for col in ("open", "high", "low", "close", "volume", "trade_count"):
        assert routed[col].to_pylist() == lake_only[col].to_pylist(), col
    for a, b in zip(routed["vwap"].to_pylist(), lake_only["vwap"].to_pylist(), strict=True):
        assert abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal("1e-6") * Decimal(str(b))
    assert date.fromtimestamp(routed["ts"][0].as_py() // 10**9) < today


def test_trades_when_hot_store_trails_the_lake_come_from_both_without_hole(
    two_day_lake, pg_db: str
) -> None:
    from fluxforge import lake
    from fluxforge.hot import HotStore
    from fluxforge.storage import open_storage

    cfg, (day1, day2) = two_day_lake
    start, end = day1 - 3600 * 10**9, day2 + 3600 * 10**9
    lake_only = Reader(cfg).trades("okx", "BTC-USDT", start, end)
    today = datetime.fromtimestamp(day2 // 10**9, tz=UTC).date()
    store = open_storage(cfg.storage.etl_output)
    hot = HotStore(pg_db, cfg.lifecycle.hot_intervals)
    hot.ensure_schema()
    # only the first half of day 2's trades reached the hot store so far
    part = [k for k in lake.list_parts(store, "trades") if f"date={today}" in k]
    assert len(part) == 1
    rows = lake.read_file(store, part[0], "trades")
    half = rows.slice(0, rows.num_rows // 2)
    hot.load("trades", today, hot.prepare(half, "trades", "okx", "BTC-USDT"))
    assert 0 < hot.count("trades", today) < rows.num_rows
    reader = Reader(cfg, hot=hot)
    routed = reader.trades("okx", "BTC-USDT", start, end)
    assert routed.equals(lake_only)
