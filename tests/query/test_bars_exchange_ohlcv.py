"""`query bars` over a range that straddles streamed trades and exchange OHLCV from `history`:
trade-derived bars where trades exist (source `trades`), the exchange's candles elsewhere
(source `exchange`), one row per bar start."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest

from fluxforge import history, sql_models
from fluxforge.captures import merge_captures
from fluxforge.config import Config, config_from_dict
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, LocalStorage

MIN = 60 * 10**9


@pytest.fixture
def okx_lake(captures: Path, tmp_path: Path) -> tuple[Config, int]:
    """The OKX capture processed into a lake with its SQL bars; returns (config, first bar)."""
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    storage = LocalStorage(tmp_path)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    lines = [
        encode_envelope(r.ts, "okx", "okx", i, "msg", r.payload) for i, r in enumerate(recs, 1)
    ]
    hour = datetime.fromtimestamp(recs[0].ts // 10**9, tz=UTC)
    storage.write_bytes(layout.segment("ready", "okx", segment_name(hour, 1)), b"".join(lines))
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(tmp_path)}}, environ={})
    assert not process_ready(cfg).failed
    assert sql_models.run(cfg).ok
    return cfg, recs[0].ts - recs[0].ts % MIN


def _candles(first: int, n: int) -> list[list]:
    """ccxt-shaped 1m candles [ms, o, h, l, c, v] from `first` (ns), prices far from the
    trades' so a wrong source shows."""
    return [[(first + k * MIN) // 10**6, 10 + k, 12 + k, 9 + k, 11 + k, 100 + k] for k in range(n)]


def test_bars_range_straddling_trades_and_exchange_ohlcv_has_the_right_source(okx_lake) -> None:
    cfg, first = okx_lake
    reader = Reader(cfg)
    from_trades = reader.bars("okx", "BTC-USDT", first - 10 * MIN, first + 10 * MIN, "1m")
    assert from_trades.num_rows >= 1 and set(from_trades["source"].to_pylist()) == {"trades"}
    traded = set(from_trades["ts"].to_pylist())
    # history backfilled 1m candles from 5 minutes before the stream to 5 minutes after it
    start, n = first - 5 * MIN, 5 + len(traded) + 5
    layer = cfg.storage.etl_output
    history.write_ohlcv(
        LocalStorage(layer.base_dir),
        Layout.of(layer),
        "okx",
        "BTC-USDT",
        history.ohlcv_table(_candles(start, n), "1m"),
        "1m",
        start,
        start + n * MIN,
        cfg.refinery.row_group_size,
        history.HistoryReport("okx", "BTC-USDT", "BTC/USDT", start, start + n * MIN, "ohlcv", "1m"),
    )
    got = reader.bars("okx", "BTC-USDT", start - 2 * MIN, start + (n + 2) * MIN, "1m")
    rows = got.to_pylist()
    ts = [r["ts"] for r in rows]
    assert ts == sorted(set(ts)) and ts == [start + k * MIN for k in range(n)]
    for r in rows:
        k = (r["ts"] - start) // MIN
        if r["ts"] in traded:
            assert r["source"] == "trades" and r["open"] > 1000  # BTC, not the fake candles
            assert r["trade_count"] >= 1 and r["vwap"] is not None
        else:
            assert r["source"] == "exchange"
            assert (r["open"], r["close"], r["volume"]) == (
                Decimal(10 + k),
                Decimal(11 + k),
                Decimal(100 + k),
            )
            assert r["vwap"] is None and r["trade_count"] is None
    assert {"trades", "exchange"} == set(got["source"].to_pylist())
    # trade-derived rows are the same as without the candles
    mine = got.filter(pc.equal(got["source"], "trades"))
    assert mine.equals(from_trades.filter(pc.is_in(from_trades["ts"], mine["ts"])))
    # another interval's candles do not leak in
    assert set(
        reader.bars("okx", "BTC-USDT", start, start + n * MIN, "5m")["source"].to_pylist()
    ) == {"trades"}
