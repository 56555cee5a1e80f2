"""Bars of a hot day whose hot store trails the lake: the lake's later trades complete them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fluxforge import lake, sql_models
from fluxforge.captures import merge_captures
from fluxforge.config import Config, config_from_dict
from fluxforge.hot import HotStore, load_keys
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, LocalStorage, open_storage

pytestmark = pytest.mark.services
SEC = 10**9
DAY = 86_400 * SEC
INTERVALS = ("1m", "5m", "1h", "1d")
COPIES = 5
STEP = 37 * SEC  # receive-time distance between copies: bars straddle segments
LATE = 50 * SEC  # the last copy's trades happened this much earlier than they arrived


def _shift(payload: bytes, event_ns: int, copy: int) -> bytes:
    """OKX frame with event times moved by `event_ns` and trade ids made unique per copy."""
    msg = orjson.loads(payload)
    for row in msg.get("data", []) if isinstance(msg.get("data"), list) else []:
        if isinstance(row, dict) and "ts" in row:
            row["ts"] = str(int(row["ts"]) + event_ns // 10**6)
        if isinstance(row, dict) and "tradeId" in row:  # a copy is a new trade, not a repeat
            row["tradeId"] = str(int(row["tradeId"]) + copy * 10**9)
    return orjson.dumps(msg)


@pytest.fixture(scope="module")
def segmented_day(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, int]:
    """One UTC hour holding COPIES raw segments (one copy of the OKX capture each, STEP apart),
    refined into the lake with its SQL-model bars. The last copy arrives LATE: its event times
    fall into bars the earlier segments already opened."""
    return _build_day(captures, tmp_path_factory.mktemp("segmented_day"), repeat=False)


@pytest.fixture(scope="module")
def repeated_day(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, int]:
    """The same day plus one more segment that repeats the first copy's trades (same ids, same
    event times, received later), as a reconnect's replayed trades do."""
    return _build_day(captures, tmp_path_factory.mktemp("repeated_day"), repeat=True)


def _build_day(captures: Path, tmp_path: Path, repeat: bool) -> tuple[Config, int]:
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    storage = LocalStorage(tmp_path)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    first = recs[0].ts
    hour_ns = first - first % (3600 * SEC)
    base = hour_ns + 10 * 60 * SEC + 7 * SEC - first  # every copy lands inside the same hour
    seq = 0
    for copy in range(COPIES + 1 if repeat else COPIES):
        recv_shift = base + copy * STEP
        event_shift = recv_shift - (LATE if copy == COPIES - 1 else 0)
        ids = copy
        if copy == COPIES:  # the repeat of copy 0
            event_shift, ids = base, 0
        lines = []
        for r in recs:
            seq += 1
            payload = _shift(r.payload, event_shift, ids)
            lines.append(encode_envelope(r.ts + recv_shift, "okx", "okx", seq, "msg", payload))
        hour = datetime.fromtimestamp(hour_ns // SEC, tz=UTC)
        storage.write_bytes(
            layout.segment("ready", "okx", segment_name(hour, copy + 1)), b"".join(lines)
        )
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(tmp_path)}}, environ={})
    assert not process_ready(cfg).failed
    assert sql_models.run(cfg).ok
    return cfg, hour_ns


def _segment_counter(key: str) -> int:
    """The raw segment counter a lake file was published from (``..._{NNNNN}-v...``)."""
    match = re.search(r"segment_\d{8}T\d{2}_(\d+)", key.rsplit("/", 1)[-1])
    assert match, key
    return int(match.group(1))


def _hot(cfg: Config, dsn: str, segments: int) -> HotStore:
    """A hot store holding the parts of the first `segments` raw segments, as when the loader
    is behind the refinery."""
    hot = HotStore(dsn, INTERVALS)
    hot.ensure_schema()
    storage = open_storage(cfg.storage.etl_output)
    keys = [
        key
        for table in ("trades", "quotes", "book_snapshots")
        for key in lake.list_parts(storage, table)
        if _segment_counter(key) <= segments
    ]
    assert keys
    load_keys(hot, storage, keys)
    return hot


def _day(hour_ns: int) -> tuple[date, int, int]:
    day = datetime.fromtimestamp(hour_ns // SEC, tz=UTC).date()
    start = hour_ns - hour_ns % DAY
    return day, start, start + DAY - 1


def _lake_only(cfg: Config, start: int, end: int) -> dict[str, pa.Table]:
    reader = Reader(cfg)
    assert reader.hot is None
    out = {iv: reader.bars("okx", "BTC-USDT", start, end, iv) for iv in INTERVALS}
    assert out["1m"].num_rows >= 3
    assert all(out[iv].num_rows for iv in INTERVALS)
    return out


def _assert_same_bars(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got["ts"].to_pylist() == want["ts"].to_pylist()
    for col in ("open", "high", "low", "close", "volume", "trade_count"):
        assert got[col].to_pylist() == want[col].to_pylist(), col
    for a, b in zip(got["vwap"].to_pylist(), want["vwap"].to_pylist(), strict=True):
        assert abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal("1e-9") * Decimal(str(b))


@pytest.mark.parametrize("segments", [1, 2, 3, COPIES - 1])
def test_bars_when_hot_store_trails_the_lake_equal_lake_only(
    segmented_day, pg_db: str, segments: int
) -> None:
    cfg, hour_ns = segmented_day
    day, start, end = _day(hour_ns)
    lake_only = _lake_only(cfg, start, end)
    hot = _hot(cfg, pg_db, segments)
    reader = Reader(cfg, hot=hot)
    for iv in INTERVALS:
        # the hot store alone is behind the lake
        hot_alone = hot.read(f"bars_{iv}", "okx", "BTC-USDT", day)
        assert pc.sum(hot_alone["trades"]).as_py() < pc.sum(lake_only[iv]["trade_count"]).as_py()
        _assert_same_bars(reader.bars("okx", "BTC-USDT", start, end, iv), lake_only[iv])


def test_bars_sub_range_when_hot_store_trails_equal_lake_only(segmented_day, pg_db: str) -> None:
    cfg, hour_ns = segmented_day
    _, day_start, day_end = _day(hour_ns)
    all_bars = _lake_only(cfg, day_start, day_end)["1m"]
    # from inside the first bar to the start of the last: bars starting in [start, end] only
    start, end = all_bars["ts"][0].as_py() + 1, all_bars["ts"][-1].as_py()
    want = all_bars.filter(
        pc.and_(pc.greater_equal(all_bars["ts"], start), pc.less_equal(all_bars["ts"], end))
    )
    assert 0 < want.num_rows < all_bars.num_rows
    for segments in (2, 3):
        with_hot = Reader(cfg, hot=_hot(cfg, pg_db, segments))
        _assert_same_bars(with_hot.bars("okx", "BTC-USDT", start, end, "1m"), want)


def test_bars_when_hot_store_has_no_trades_of_the_symbol_come_from_the_lake(
    segmented_day, pg_db: str
) -> None:
    cfg, hour_ns = segmented_day
    day, start, end = _day(hour_ns)
    lake_only = _lake_only(cfg, start, end)
    # the hot day exists (another symbol's trades were loaded) but holds no BTC-USDT trade
    hot = HotStore(pg_db, INTERVALS)
    hot.ensure_schema()
    rows = Reader(cfg).trades("okx", "BTC-USDT", start, end)
    hot.load("trades", day, hot.prepare(rows, "trades", "okx", "ETH-USDT"))
    assert day in hot.days("bars_1m")
    assert hot.read("trades", "okx", "BTC-USDT", day).num_rows == 0
    reader = Reader(cfg, hot=hot)
    for iv in INTERVALS:
        _assert_same_bars(reader.bars("okx", "BTC-USDT", start, end, iv), lake_only[iv])


def test_bars_when_hot_store_is_complete_are_the_hot_bars(segmented_day, pg_db: str) -> None:
    cfg, hour_ns = segmented_day
    day, start, end = _day(hour_ns)
    lake_only = _lake_only(cfg, start, end)
    hot = _hot(cfg, pg_db, COPIES)
    reader = Reader(cfg, hot=hot)
    for iv in INTERVALS:
        got = reader.bars("okx", "BTC-USDT", start, end, iv)
        _assert_same_bars(got, lake_only[iv])
        hot_bars = hot.read(f"bars_{iv}", "okx", "BTC-USDT", day)
        assert got["ts"].to_pylist() == hot_bars["ts"].to_pylist()
        assert got["vwap"].to_pylist() == pc.cast(hot_bars["vwap"], pa.float64()).to_pylist()


@pytest.mark.parametrize("segments", [COPIES, COPIES + 1])
def test_bars_with_repeated_trade_ids_count_each_trade_once(
    repeated_day, pg_db: str, segments: int
) -> None:
    """Hot bars (complete, or trailing before the repeat) equal the SQL models', which keep a
    venue trade id once: a repeated trade adds no volume and no count."""
    cfg, hour_ns = repeated_day
    _, start, end = _day(hour_ns)
    lake_only = _lake_only(cfg, start, end)
    trades = Reader(cfg).trades("okx", "BTC-USDT", start, end)
    distinct = len(set(trades["trade_id"].to_pylist()))
    assert distinct < trades.num_rows  # the lake keeps the repeat; bars must not count it
    assert pc.sum(lake_only["1d"]["trade_count"]).as_py() == distinct
    reader = Reader(cfg, hot=_hot(cfg, pg_db, segments))
    for iv in INTERVALS:
        _assert_same_bars(reader.bars("okx", "BTC-USDT", start, end, iv), lake_only[iv])


def test_hot_bars_loaded_segment_by_segment_equal_one_full_load(repeated_day, pg_db: str) -> None:
    """Each load re-aggregates only the bars from its earliest trade on; the late segment (event
    times inside older bars) and the repeated trades must still give the full load's bars."""
    import psycopg

    cfg, hour_ns = repeated_day
    day, _, _ = _day(hour_ns)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA whole")
    whole = HotStore(pg_db, INTERVALS, schema="whole")
    whole.ensure_schema()
    stepwise = HotStore(pg_db, INTERVALS)
    stepwise.ensure_schema()
    storage = open_storage(cfg.storage.etl_output)
    keys = lake.list_parts(storage, "trades")
    load_keys(whole, storage, keys)
    by_segment: dict[int, list[str]] = {}
    for key in keys:
        by_segment.setdefault(_segment_counter(key), []).append(key)
    assert len(by_segment) == COPIES + 1
    for segment in sorted(by_segment):
        load_keys(stepwise, storage, by_segment[segment])
    for iv in INTERVALS:
        want = whole.read(f"bars_{iv}", "okx", "BTC-USDT", day)
        got = stepwise.read(f"bars_{iv}", "okx", "BTC-USDT", day)
        assert want.num_rows and got.to_pylist() == want.to_pylist(), iv
