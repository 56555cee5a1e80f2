"""History backfill through ccxt REST (fluxforge.history) against a local HTTP server that
serves hand-recorded Binance spot responses (tests/fixtures/history) with Binance's paging
rules; ccxt is pointed at it through its ``urls`` and given its market with ``set_markets``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from delta_fixture import committed_files

from fluxforge import lake
from fluxforge.config import Config, config_from_dict
from fluxforge.history import HistoryError, backfill
from fluxforge.storage import Layout, LocalStorage

pytestmark = pytest.mark.services  # starts an HTTP server on 127.0.0.1

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "history"
AGG_TRADES = json.loads((FIXTURES / "binance_spot_aggTrades_BTCUSDT.json").read_text())
KLINES = json.loads((FIXTURES / "binance_spot_klines_BTCUSDT_1m.json").read_text())
MARKETS = json.loads((FIXTURES / "binance_spot_markets.json").read_text())
KRAKEN_TRADES = json.loads((FIXTURES / "kraken_Trades_XXBTZUSD.json").read_text())
KRAKEN_MARKETS = json.loads((FIXTURES / "kraken_markets.json").read_text())
HOUR_MS = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class BinanceSpot(ThreadingHTTPServer):
    """``/api/v3/aggTrades`` and ``/api/v3/klines`` sliced like Binance does (and Kraken's
    ``/0/public/Trades``); every request's query is logged; ``fail_next`` answers that many
    requests with HTTP 429 first."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.fail_next = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _error(code: int, msg: str) -> tuple[int, Any]:
    return 400, {"code": code, "msg": msg}


def _limit(q: dict[str, str]) -> int:
    return min(int(q.get("limit", 500)), 1000)


def agg_trades(q: dict[str, str]) -> tuple[int, Any]:
    if q.get("symbol") != "BTCUSDT":
        return _error(-1121, "Invalid symbol.")
    if "fromId" in q and ("startTime" in q or "endTime" in q):
        return _error(-1128, "Combination of optional parameters invalid.")
    rows = AGG_TRADES
    if "fromId" in q:
        rows = [t for t in rows if t["a"] >= int(q["fromId"])]
    elif "startTime" in q or "endTime" in q:
        t0, t1 = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        if "startTime" in q and "endTime" in q and t1 - t0 > HOUR_MS:
            return _error(-1127, "More than 1 hours between startTime and endTime.")
        rows = [t for t in rows if t0 <= t["T"] <= t1]
    else:
        return 200, rows[-_limit(q) :]
    return 200, rows[: _limit(q)]


def klines(q: dict[str, str]) -> tuple[int, Any]:
    if q.get("symbol") != "BTCUSDT":
        return _error(-1121, "Invalid symbol.")
    if q.get("interval") != "1m":
        return _error(-1120, "Invalid interval.")
    t0, t1 = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
    rows = [k for k in KLINES if t0 <= k[0] <= t1]
    return 200, rows[: _limit(q)] if "startTime" in q else rows[-_limit(q) :]


def kraken_trades(q: dict[str, str]) -> tuple[int, Any]:
    pair = q.get("pair", "")
    if pair not in KRAKEN_TRADES["result"]:
        return 200, {"error": ["EQuery:Unknown asset pair"]}
    since = int(q.get("since", 0))
    since_s = since / 1e9 if since > 10**12 else since  # seconds or ns, as Kraken accepts
    rows = [t for t in KRAKEN_TRADES["result"][pair] if t[2] >= since_s]
    rows = rows[: min(int(q.get("count", 1000)), 1000)]
    last = str(round(rows[-1][2] * 1e9)) if rows else str(since)
    return 200, {"error": [], "result": {pair: rows, "last": last}}


class _Handler(BaseHTTPRequestHandler):
    server: BinanceSpot

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.server.lock:
            self.server.requests.append((url.path, q))
            throttled = self.server.fail_next > 0
            self.server.fail_next -= throttled
        if throttled:
            status, body = 429, {"code": -1003, "msg": "Too many requests."}
        elif url.path == "/api/v3/aggTrades":
            status, body = agg_trades(q)
        elif url.path == "/api/v3/klines":
            status, body = klines(q)
        elif url.path == "/0/public/Trades":
            status, body = kraken_trades(q)
        else:
            status, body = 404, {"code": -1, "msg": f"no fixture for {url.path}"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def binance() -> Iterator[BinanceSpot]:
    server = BinanceSpot()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config_from_dict({"storage": {"base_dir": str(tmp_path / "lake")}}, environ={})


def options(server: BinanceSpot) -> dict[str, Any]:
    # rateLimit 1 ms: ccxt's limiter stays on (as in production) without slowing the test
    return {"urls": {"api": {"public": f"{server.url}/api/v3"}}, "rateLimit": 1}


def run(cfg: Config, server: BinanceSpot, start: str, end: str, **kw: Any):
    kw.setdefault("limit", 7)
    return backfill(
        cfg, "binance", "BTC/USDT", start, end,
        ccxt_options=options(server), markets=MARKETS, **kw,
    )  # fmt: skip


def storage_of(cfg: Config) -> LocalStorage:
    return LocalStorage(cfg.storage.etl_output.base_dir)


def part(cfg: Config, table: str, day: str, stem: str) -> Path:
    """The committed history file of a partition (a path that does not exist when none is)."""
    root = Path(cfg.storage.etl_output.base_dir)
    keys = [
        k
        for k in lake.list_parts(storage_of(cfg), table, "binance", "BTC-USDT", day)
        if k.rsplit("/", 1)[-1].startswith(f"part-{stem}-v")
    ]
    assert len(keys) <= 1, keys
    return root / keys[0] if keys else root / f"no-{table}-{day}-{stem}.parquet"


def trade_ids(cfg: Config, day: str | None = None) -> list[str]:
    data = lake.read_table(storage_of(cfg), "trades", "binance", "BTC-USDT", day)
    return data.column("trade_id").to_pylist()


def lake_bytes(cfg: Config) -> dict[str, bytes]:
    """The committed files of every lake table (from the Delta logs) and their bytes."""
    return committed_files(Path(cfg.storage.etl_output.base_dir), lake.TABLES)


def test_history_backfill_over_midnight_writes_trades_and_ohlcv_with_exact_values(
    cfg: Config, binance: BinanceSpot
) -> None:
    report = run(cfg, binance, "2024-03-01T21:00:00Z", "2024-03-02T00:10:00Z")

    assert report.symbol == "BTC-USDT" and report.venue_symbol == "BTCUSDT"
    # trades 1000..1029 (1029 at 00:09:41); per UTC day of the trade time
    assert trade_ids(cfg, "2024-03-01") == [str(i) for i in range(1000, 1021)]
    assert trade_ids(cfg, "2024-03-02") == [str(i) for i in range(1021, 1030)]
    assert report.trades_written == report.trades_fetched == 30
    day1 = pq.read_table(part(cfg, "trades", "2024-03-01", "history"))
    first = day1.slice(0, 1).to_pylist()[0]
    assert first["price"] == Decimal("62001.25") and first["size"] == Decimal("0.00001")
    # the file stores times as UTC timestamps (fluxforge/tables.py)
    when = datetime.fromtimestamp(ms("2024-03-01T23:31:00.417") / 1000, tz=UTC)
    assert first["ts_event"] == first["ts_recv"] == when
    assert first["side"] == "sell"  # m=true: the buyer was the maker, the taker sold
    assert first["seq"] == 1000 and first["venue_symbol"] == "BTCUSDT"
    assert day1.column("size").to_pylist()[4] == Decimal("3.14159")

    # candles opening 23:50..00:09 (00:10 is the exclusive end)
    bars = lake.read_table(storage_of(cfg), "ohlcv", "binance", "BTC-USDT")
    assert bars.num_rows == report.bars_written == 20
    assert bars.column("date").to_pylist() == ["2024-03-01"] * 10 + ["2024-03-02"] * 10
    bar = bars.slice(0, 1).to_pylist()[0]
    assert bar["ts"] == ms("2024-03-01T23:50:00") * 1_000_000 and bar["interval"] == "1m"
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == (
        Decimal("62000"), Decimal("62001.75"), Decimal("61999.25"), Decimal("62000.5"),
        Decimal("1.5"),
    )  # fmt: skip
    assert bar["trade_count"] is None
    assert part(cfg, "ohlcv", "2024-03-02", "history-1m").is_file()


def test_history_trades_paging_steps_empty_windows_then_follows_trade_ids(
    cfg: Config, binance: BinanceSpot
) -> None:
    run(cfg, binance, "2024-03-01T21:00:00Z", "2024-03-02T00:10:00Z", what="trades")

    queries = [q for path, q in binance.requests if path == "/api/v3/aggTrades"]
    # 21:00 and 22:00 windows are empty, the 23:00 window finds the first 7 trades
    assert [q.get("startTime") for q in queries[:3]] == [
        str(ms("2024-03-01T21:00:00")), str(ms("2024-03-01T22:00:00")),
        str(ms("2024-03-01T23:00:00")),
    ]  # fmt: skip
    # pages of 7 by id; the day ends past midnight (1021..1027 is 2024-03-02); the next day
    # starts by time at midnight, then follows the ids again and stops past the end
    assert [(q.get("startTime"), q.get("fromId")) for q in queries[3:]] == [
        (None, "1007"), (None, "1014"), (None, "1021"),
        (str(ms("2024-03-02T00:00:00")), None), (None, "1028"),
    ]  # fmt: skip
    assert all(q["limit"] == "7" for q in queries)


def test_history_ohlcv_paging_follows_open_times_across_pages(
    cfg: Config, binance: BinanceSpot
) -> None:
    run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:14:00Z", what="ohlcv")

    starts = [int(q["startTime"]) for p, q in binance.requests if p == "/api/v3/klines"]
    base = ms("2024-03-01T23:50:00")
    # one UTC day at a time: 23:50, 23:57 (its page runs past midnight), then 00:00, 00:07
    assert starts == [base, base + 7 * 60_000, base + 10 * 60_000, base + 17 * 60_000]
    bars = lake.read_table(storage_of(cfg), "ohlcv", "binance", "BTC-USDT")
    assert bars.column("ts").to_pylist() == [(base + i * 60_000) * 1_000_000 for i in range(24)]


def test_history_rerun_same_range_rewrites_identical_files(
    cfg: Config, binance: BinanceSpot
) -> None:
    run(cfg, binance, "2024-03-01T23:00:00Z", "2024-03-02T00:30:00Z")
    before = lake_bytes(cfg)
    report = run(cfg, binance, "2024-03-01T23:00:00Z", "2024-03-02T00:30:00Z")

    assert lake_bytes(cfg) == before
    assert len(before) == 4 and sorted(report.files) == sorted(before)
    ids = trade_ids(cfg)
    assert len(ids) == len(set(ids)) == 40


def test_history_overlapping_ranges_add_up_without_duplicates(
    cfg: Config, binance: BinanceSpot
) -> None:
    run(cfg, binance, "2024-03-02T00:05:00Z", "2024-03-02T00:20:00Z")
    run(cfg, binance, "2024-03-01T23:55:00Z", "2024-03-02T00:10:00Z")

    # 1018 (23:55:00.615) .. 1036 (00:19:22)
    assert trade_ids(cfg) == [str(i) for i in range(1018, 1037)]
    bars = lake.read_table(storage_of(cfg), "ohlcv", "binance", "BTC-USDT").column("ts")
    assert len(bars) == len(set(bars.to_pylist())) == 20  # 23:55 .. 00:14


def test_history_range_start_inclusive_end_exclusive(cfg: Config, binance: BinanceSpot) -> None:
    # 1021 is exactly at midnight; 1022 and 1023 share a millisecond; 1024 is exactly at end
    start = ms("2024-03-02T00:00:00")
    end = AGG_TRADES[24]["T"]
    report = run(cfg, binance, str(start * 1_000_000), str(end * 1_000_000), limit=2)

    assert trade_ids(cfg) == ["1021", "1022", "1023"]
    assert report.trades_written == 3
    bars = lake.read_table(storage_of(cfg), "ohlcv", "binance", "BTC-USDT").column("ts")
    assert bars.to_pylist() == [(start + i * 60_000) * 1_000_000 for i in range(3)]
    assert not part(cfg, "trades", "2024-03-01", "history").exists()


def streaming_part(cfg: Config, day: str, segment: str, ids: list[int], recv_ms: int) -> None:
    """A trades part as the refinery writes it from the aggTrade stream."""
    import pyarrow as pa

    from fluxforge.tables import TRADES

    rows = [t for t in AGG_TRADES if t["a"] in ids]
    data = pa.table(
        {
            "ts_event": [t["T"] * 1_000_000 for t in rows],
            "ts_recv": [recv_ms * 1_000_000 + i for i in range(len(rows))],
            "venue_symbol": ["BTCUSDT"] * len(rows),
            "trade_id": [str(t["a"]) for t in rows],
            "price": [Decimal(t["p"]) for t in rows],
            "size": [Decimal(t["q"]) for t in rows],
            "side": ["sell" if t["m"] else "buy" for t in rows],
            "seq": list(range(1, len(rows) + 1)),
        },
        schema=TRADES,
    )
    storage, layout = storage_of(cfg), Layout.of(cfg.storage.etl_output)
    lake.write_part(storage, layout, "trades", "binance", "BTC-USDT", day, segment, data, 1000)


def test_history_skips_trades_the_stream_already_wrote_and_rerun_catches_up(
    cfg: Config, binance: BinanceSpot
) -> None:
    # 1020 (23:59:59.900) was received after midnight: filed under the next day by the stream
    streaming_part(cfg, "2024-03-02", "segment_20240302T00_00001", [1020, 1025, 1026],
                   ms("2024-03-02T00:06:00"))  # fmt: skip
    report = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", what="trades")

    assert report.trades_already_streamed == 3
    history = pq.read_table(part(cfg, "trades", "2024-03-01", "history"))
    assert "1020" not in history.column("trade_id").to_pylist()
    ids = trade_ids(cfg)
    assert sorted(ids) == [str(i) for i in range(1015, 1030)] and len(ids) == len(set(ids))

    # the stream delivers 1027 later: re-running the backfill drops it from the history part
    streaming_part(cfg, "2024-03-02", "segment_20240302T00_00002", [1027],
                   ms("2024-03-02T00:07:00"))  # fmt: skip
    run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", what="trades")
    ids = trade_ids(cfg)
    assert sorted(ids) == [str(i) for i in range(1015, 1030)] and len(ids) == len(set(ids))


def test_history_kraken_trades_page_by_time_cursor_with_exact_values(
    cfg: Config, binance: BinanceSpot
) -> None:
    report = backfill(
        cfg, "kraken", "BTC/USD", "2024-03-01T23:58:10Z", "2024-03-02T00:00:30Z", "trades",
        ccxt_options={"urls": {"api": {"public": binance.url}}, "rateLimit": 1},
        markets=KRAKEN_MARKETS, limit=4,
    )  # fmt: skip

    ids = [str(i) for i in range(70001001, 70001013)]  # 23:58:15.5 .. 00:00:01.5
    data = lake.read_table(storage_of(cfg), "trades", "kraken", "BTC-USD")
    assert data.column("trade_id").to_pylist() == ids and report.trades_written == 12
    assert data.column("date").to_pylist() == ["2024-03-01"] * 11 + ["2024-03-02"]
    assert data.column("venue_symbol").to_pylist()[0] == "XXBTZUSD"
    assert data.column("price").to_pylist()[0] == Decimal("61950")
    assert data.column("size").to_pylist()[3] == Decimal("0.00001")
    assert data.column("ts_event").to_pylist()[0] == ms("2024-03-01T23:58:15.500") * 1_000_000
    assert data.column("side").to_pylist()[:3] == ["buy", "buy", "sell"]
    sinces = [q["since"] for p, q in binance.requests if p == "/0/public/Trades"]
    # seconds cursor: each page restarts at the second of the last trade seen (ids de-duplicated);
    # one UTC day at a time, so 2024-03-02 starts at its midnight
    assert sinces == [str(ms(t) // 1000) for t in (
        "2024-03-01T23:58:10", "2024-03-01T23:58:47", "2024-03-01T23:59:15",
        "2024-03-01T23:59:30", "2024-03-02T00:00:00",
    )]  # fmt: skip


def test_history_kraken_more_same_instant_trades_than_a_page_warns_and_moves_on(
    cfg: Config, binance: BinanceSpot, caplog: pytest.LogCaptureFixture
) -> None:
    # 1007..1009 share 23:59:15.300 and Kraken is asked in whole seconds: pages of 2 cannot
    # reach 1009 by time; the cursor moves on (1 ms, then the next second) instead of looping
    backfill(
        cfg, "kraken", "BTC/USD", "2024-03-01T23:59:15Z", "2024-03-01T23:59:59Z", "trades",
        ccxt_options={"urls": {"api": {"public": binance.url}}, "rateLimit": 1},
        markets=KRAKEN_MARKETS, limit=2,
    )  # fmt: skip

    ids = lake.read_table(storage_of(cfg), "trades", "kraken", "BTC-USD").column("trade_id")
    assert ids.to_pylist() == ["70001007", "70001008", "70001010", "70001011"]
    assert "full page of trades without progress" in caplog.text
    sinces = [int(q["since"]) for _, q in binance.requests]
    assert sinces == [1709337555] * 3 + [1709337556, 1709337598]  # 15, 15, 15, 16, 58 s


def test_history_throttled_request_is_retried_and_nothing_is_lost(
    cfg: Config, binance: BinanceSpot
) -> None:
    binance.fail_next = 2  # two HTTP 429 answers before the first real one
    report = run(cfg, binance, "2024-03-02T00:00:00Z", "2024-03-02T00:10:00Z", what="trades")

    assert trade_ids(cfg) == [str(i) for i in range(1021, 1030)]
    assert report.requests == len(binance.requests) - 2


def test_history_gives_up_after_backoff_with_the_cause(
    cfg: Config, binance: BinanceSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fluxforge.history as history

    # the real schedule waits up to a minute: keep its shape, shrink its scale
    monkeypatch.setattr(history, "RETRY_FIRST_S", 0.001)
    monkeypatch.setattr(history, "RETRY_CAP_S", 0.01)
    binance.fail_next = 100
    with pytest.raises(HistoryError) as err:
        run(cfg, binance, "2024-03-02T00:00:00Z", "2024-03-02T00:10:00Z", what="trades")
    text = str(err.value)
    assert f"giving up after {history.RETRY_ATTEMPTS} attempts" in text
    assert "DDoSProtection: binance 429" in text and "Too many requests" in text
    assert len(binance.requests) == history.RETRY_ATTEMPTS


def test_history_resume_skips_the_days_a_previous_run_finished(
    cfg: Config, binance: BinanceSpot
) -> None:
    steps: list[str] = []
    first = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", what="trades",
                progress=steps.append)  # fmt: skip
    assert (first.days, first.days_skipped) == (2, 0)
    assert [s.split(":")[0] for s in steps] == ["2024-03-01", "2024-03-02"]
    before = len(binance.requests)
    again = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", what="trades",
                resume=True)  # fmt: skip
    assert (again.days, again.days_skipped, again.requests) == (0, 2, 0)
    assert len(binance.requests) == before
    wider = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:20:00Z", what="trades",
                resume=True)  # fmt: skip
    assert (wider.days, wider.days_skipped) == (1, 1)  # 2024-03-02's slice grew: fetched


@pytest.mark.parametrize(
    ("exchange", "symbol", "start", "end", "what", "message"),
    [
        ("nosuchexchange", "BTC/USDT", "2024-03-01", "2024-03-02", "both", "not a ccxt exchange"),
        ("../binance", "BTC/USDT", "2024-03-01", "2024-03-02", "both", "not a ccxt exchange"),
        ("binance", "BTCUSDT", "2024-03-01", "2024-03-02", "both", "expected a ccxt symbol"),
        ("binance", "ETH/USDT", "2024-03-01", "2024-03-02", "both", "'ETH/USDT' is not listed"),
        ("binance", "BTC/USDT", "2024-03-02", "2024-03-01", "both", "must be after start"),
        ("binance", "BTC/USDT", "2024-03-01", "2024-03-01", "both", "must be after start"),
        ("binance", "BTC/USDT", "yesterday", "2024-03-01", "both", "start='yesterday'"),
        ("binance", "BTC/USDT", "2024-03-01", "2024-03-02", "bars", "what='bars'"),
    ],
)
def test_history_bad_arguments_raise_clear_error_and_write_nothing(
    cfg: Config,
    binance: BinanceSpot,
    exchange: str,
    symbol: str,
    start: str,
    end: str,
    what: str,
    message: str,
) -> None:
    with pytest.raises(HistoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        backfill(
            cfg, exchange, symbol, start, end, what,  # type: ignore[arg-type]
            ccxt_options=options(binance), markets=MARKETS,
        )  # fmt: skip
    assert lake_bytes(cfg) == {}
    assert binance.requests == []


def test_history_bad_timeframe_names_the_allowed_ones(cfg: Config, binance: BinanceSpot) -> None:
    with pytest.raises(HistoryError, match="timeframe '7m' not offered; allowed"):
        run(cfg, binance, "2024-03-01", "2024-03-02", timeframe="7m")


def test_history_cli_json_reports_rows_and_files(
    cfg: Config, binance: BinanceSpot, tmp_path: Path
) -> None:
    from fluxforge.cli import main

    config = tmp_path / "fluxforge.yaml"
    config.write_text(json.dumps({"storage": {"base_dir": cfg.storage.etl_output.base_dir}}))
    ccxt_file = tmp_path / "ccxt.json"
    ccxt_file.write_text(json.dumps({**options(binance), "markets": MARKETS}))
    args = [
        "history", "--config", str(config), "--exchange", "binance", "--symbol", "BTC/USDT",
        "--start", "2024-03-02T00:00:00Z", "--end", "2024-03-02T00:05:00Z",
        "--ccxt-options", str(ccxt_file), "--no-hot", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["trades_written"] == 5 and out["bars_written"] == 5  # 1021..1025; 00:00..00:04
    assert out["symbol"] == "BTC-USDT" and len(out["files"]) == 2
    assert trade_ids(cfg) == [str(i) for i in range(1021, 1026)]

    again = CliRunner().invoke(main, args[:-1])  # plain text: a summary line and the files
    assert again.exit_code == 0, again.output
    assert "binance BTC-USDT [2024-03-02T00:00:00Z, 2024-03-02T00:05:00Z): 5 trades" in again.output
    assert all(f in again.output for f in out["files"])

    bad = CliRunner().invoke(main, [*args[:9], "--end", "2024-03-01", "--no-hot"])
    assert bad.exit_code != 0 and "must be after start" in bad.output


def test_history_loads_hot_window_days_into_postgres_once(
    tmp_path: Path, binance: BinanceSpot, pg_db: str
) -> None:
    from datetime import date

    from fluxforge.hot import HotStore

    cfg = config_from_dict(
        {"storage": {"base_dir": str(tmp_path / "lake")}, "lifecycle": {"hot_days": 1}},
        environ={},
    )
    today = date(2024, 3, 2)  # hot window = 2024-03-02 only
    first = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", hot_dsn=pg_db,
                today=today)  # fmt: skip
    again = run(cfg, binance, "2024-03-01T23:50:00Z", "2024-03-02T00:10:00Z", hot_dsn=pg_db,
                today=today)  # fmt: skip

    hot = HotStore(pg_db, cfg.lifecycle.hot_intervals)
    assert first.hot_rows["trades"] == 9 and again.hot_rows.get("trades", 0) == 0
    assert hot.days("trades") == [today]
    rows = hot.read("trades", "binance", "BTC-USDT", today)
    assert rows.column("trade_id").to_pylist() == [str(i) for i in range(1021, 1030)]
    assert rows.column("price").to_pylist()[0] == Decimal("61999.99")
    assert hot.count("bars_1m", today) == 8  # minutes 0,1,2,4,5,6,8,9 hold trades


@pytest.mark.slow
def test_history_dagster_job_backfills_and_reports_metadata(
    cfg: Config, binance: BinanceSpot, tmp_path: Path
) -> None:
    from fluxforge_dagster.defs.history import HISTORY_JOB, history_backfill_job
    from fluxforge_dagster.defs.resources import FluxForgeResource

    config = tmp_path / "fluxforge.yaml"
    config.write_text(json.dumps({"storage": {"base_dir": cfg.storage.etl_output.base_dir}}))
    op_config = {
        "exchange": "binance", "symbol": "BTC/USDT", "start": "2024-03-02T00:00:00Z",
        "end": "2024-03-02T00:05:00Z", "limit": 3, "hot": False,
        "ccxt_options": {**options(binance), "markets": MARKETS},
    }  # fmt: skip
    result = history_backfill_job.execute_in_process(
        run_config={"ops": {"history_backfill": {"config": op_config}}},
        resources={"fluxforge": FluxForgeResource(config_path=str(config))},
    )

    assert result.success and result.job_def.name == HISTORY_JOB
    outputs = [e for e in result.events_for_node("history_backfill") if e.is_successful_output]
    meta = outputs[0].event_specific_data.metadata
    assert meta["trades_written"].value == 5 and meta["bars_written"].value == 5
    assert meta["requests"].value == len(binance.requests)
    assert trade_ids(cfg) == [str(i) for i in range(1021, 1026)]


@pytest.mark.slow
def test_history_dagster_definitions_load_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    config = tmp_path / "fluxforge.yaml"
    config.write_text(json.dumps({"storage": {"base_dir": str(tmp_path / "lake")}}))
    monkeypatch.setenv("FLUXFORGE_CONFIG", str(config))
    from fluxforge_dagster.definitions import defs

    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert loaded.get_job_def("history_backfill_job").name == "history_backfill_job"


def test_history_rows_reach_the_sql_layer_source_and_trade_bars(
    cfg: Config, binance: BinanceSpot, tmp_path: Path
) -> None:
    import duckdb
    import yaml

    from fluxforge import sql_models
    from fluxforge.dbt_profile import PROJECT_DIR, duckdb_path

    run(cfg, binance, "2024-03-02T00:00:00Z", "2024-03-02T00:10:00Z")
    sources = yaml.safe_load((PROJECT_DIR / "models/staging/_sources.yml").read_text())
    assert "ohlcv" in {t["name"] for t in sources["sources"][0]["tables"]}
    root = Path(cfg.storage.etl_output.base_dir)

    # the repository's trade bars pick the REST trades up like streamed ones
    assert sql_models.run(cfg, select=["+bars_1m"]).ok
    bars = pq.read_table(sorted((root / "processed/models/bars_1m").rglob("*.parquet"))[0])
    assert bars.column("trade_count").to_pylist() == [1, 2, 1, 1, 1, 1, 1, 1]  # 1021..1029

    # and source('lake', 'ohlcv') reads the REST candles with their partition columns
    project = tmp_path / "sqlproj"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: t\nconfig-version: 2\nprofile: fluxforge\nmodels:\n  t:\n    +materialized: table\n"
    )
    (project / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: lake\n    meta: {plugin: delta}\n"
        "    tables:\n      - name: ohlcv\n        config: {delta_table_path: ohlcv}\n"
    )
    (project / "models" / "ohlcv_span.sql").write_text(
        "select exchange, symbol, count(*) as bars, max(high) as high, min(ts) as first_ts\n"
        "from {{ source('lake', 'ohlcv') }} group by exchange, symbol\n"
    )
    assert sql_models.run(cfg, project_dir=project).ok
    with duckdb.connect(str(duckdb_path(cfg)), read_only=True) as db:
        rel = db.sql("select * from ohlcv_span")
        row = dict(zip(rel.columns, rel.fetchall()[0], strict=True))
    assert (row["exchange"], row["symbol"], row["bars"]) == ("binance", "BTC-USDT", 10)
    first_ts = datetime.fromtimestamp(ms("2024-03-02") / 1000, tz=UTC)  # a timestamp in the lake
    assert row["high"] == Decimal("62011.25") and row["first_ts"] == first_ts


def test_history_unreachable_hot_store_keeps_lake_parts_and_says_how_to_finish(
    tmp_path: Path, binance: BinanceSpot
) -> None:
    from datetime import date

    from fluxforge.history import backfill_and_load

    cfg = config_from_dict(
        {
            "storage": {"base_dir": str(tmp_path / "lake")},
            "hot_store": {"dsn": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"},
        },
        environ={},
    )
    with pytest.raises(HistoryError, match=r"(?s)lake written .*`fluxforge hot load`"):
        backfill_and_load(
            cfg, "binance", "BTC/USDT", "2024-03-02T00:00:00Z", "2024-03-02T00:05:00Z",
            "trades", ccxt_options=options(binance), markets=MARKETS, today=date(2024, 3, 2),
        )  # fmt: skip
    assert trade_ids(cfg) == [str(i) for i in range(1021, 1026)]


@pytest.mark.parametrize(
    ("candle", "message"),
    [
        ([1709337600000, 10.0, 9.0, 8.0, 8.5, 1.0], "open/close outside"),
        ([1709337600000, 10.0, 11.0, 9.0, -1.0, 1.0], "close=-1.0: negative"),
        ([1709337600000, 10.0, 11.0, 9.0, float("nan"), 1.0], "not finite"),
        ([1709337600000, 10.0, 11.0, 9.0, None, 1.0], "expected a number"),
    ],
)
def test_history_ohlcv_table_bad_candle_raises_naming_it(candle: list, message: str) -> None:
    from fluxforge.history import ohlcv_table

    with pytest.raises(HistoryError, match=message):
        ohlcv_table([candle], "1m")


def test_history_trades_table_float_amounts_become_exact_decimals() -> None:
    from fluxforge.history import trades_table

    trades = [
        {"id": "7", "timestamp": 1709337600000, "price": 0.1, "amount": 1e-05, "side": None},
        {"id": "x-1", "timestamp": 1709337600001, "price": 62000.01, "amount": 3.0, "side": "buy"},
    ]
    rows = trades_table(trades, "BTCUSDT").to_pylist()
    assert [(r["price"], r["size"], r["side"]) for r in rows] == [
        (Decimal("0.1"), Decimal("0.00001"), "unknown"),
        (Decimal("62000.01"), Decimal("3"), "buy"),
    ]
    assert rows[0]["seq"] == 7 and 0 <= rows[1]["seq"] < 2**63  # numeric id, else a hash
    with pytest.raises(HistoryError, match="price and amount must be > 0"):
        trades_table([{**trades[0], "price": 0.0}], "BTCUSDT")
