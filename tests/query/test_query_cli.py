"""The operator CLI: `fluxforge status`, `query book|trades` end to end on a real lake."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import yaml

from fluxforge.captures import merge_captures
from fluxforge.config import config_from_dict
from fluxforge.refinery import list_segments, process_claimed
from fluxforge.segments import encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage


def _fluxforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def okx_lake(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OKX capture split into two hourly-named segments; only the first one processed."""
    from datetime import UTC, datetime

    base = tmp_path_factory.mktemp("okx")
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    lines = [
        encode_envelope(r.ts, "okx", "okx", i, "msg", frame_payload(r.payload))
        for i, r in enumerate(recs, 1)
    ]
    hour = datetime.fromtimestamp(recs[0].ts // 10**9, tz=UTC)
    storage = LocalStorage(base)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    half = len(lines) // 2
    storage.write_bytes(
        layout.segment("ready", "okx", segment_name(hour, 1)), b"".join(lines[:half])
    )
    storage.write_bytes(
        layout.segment("ready", "okx", segment_name(hour, 2)), b"".join(lines[half:])
    )
    cfg_path = base / "fluxforge.yaml"
    cfg_path.write_text(yaml.safe_dump({"storage": {"backend": "local", "base_dir": str(base)}}))
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(base)}}, environ={})
    first = list_segments(cfg, "ready")[0]
    from fluxforge.refinery import claim

    assert claim(cfg, first)
    assert not process_claimed(cfg, [first]).failed
    return cfg_path


def test_status_json_reports_backlog_archive_and_last_run(okx_lake: Path) -> None:
    res = _fluxforge("status", "--config", str(okx_lake), "--json")
    assert res.returncode == 0, res.stderr
    info = orjson.loads(res.stdout)
    src = info["sources"]["okx"]
    assert (src["ready"], src["archive"], src["processing"], src["failed"]) == (1, 1, 0, 0)
    assert src["oldest_ready"].endswith("_00002.ndjson")
    assert info["last_runs"][0]["segments"] == 1
    assert info["last_runs"][0]["lag_s"] > 0


def test_query_trades_csv_matches_capture_trades(okx_lake: Path, captures: Path) -> None:
    res = _fluxforge(
        "query", "trades", "--config", str(okx_lake), "--exchange", "okx", "--symbol",
        "BTC-USDT", "--start", "2022-05-13T00:00:00Z", "--end", "2022-05-14T00:00:00Z",
        "--format", "csv",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows, "no trades returned"
    want = []
    for rec in merge_captures([captures / "OKX" / "OKX.ws.1.0"]):
        msg = orjson.loads(rec.payload) if rec.kind == "recv" else {}
        if msg.get("arg", {}).get("channel") == "trades":
            want += [(d["tradeId"], Decimal(d["px"])) for d in msg.get("data", [])]
    got = [(r["trade_id"], r["price"]) for r in rows]
    # only the first half of the capture is processed: a prefix of the capture's trades
    assert got == [(t, str(p)) for t, p in want[: len(got)]] or [(t, float(p)) for t, p in got] == [
        (t, float(p)) for t, p in want[: len(got)]
    ]


def test_query_book_json_is_best_first(okx_lake: Path) -> None:
    res = _fluxforge(
        "query", "book", "--config", str(okx_lake), "--exchange", "okx", "--symbol",
        "BTC-USDT", "--at", "2022-05-13T23:00:00Z", "--depth", "5", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    book = orjson.loads(res.stdout)
    assert {"exchange", "symbol", "ts", "bids", "asks", "valid", "gap", "snapshot_ts"} <= set(book)
    bids = [float(p) for p, _ in book["bids"]]
    asks = [float(p) for p, _ in book["asks"]]
    assert len(bids) == len(asks) == 5
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]


def test_query_book_by_event_time_answers_as_of_the_venue_clock(okx_lake: Path) -> None:
    def book(*extra: str) -> dict:
        res = _fluxforge(
            "query", "book", "--config", str(okx_lake), "--exchange", "okx", "--symbol",
            "BTC-USDT", "--at", "2022-05-13T23:00:00Z", "--depth", "5", "--json", *extra,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        return orjson.loads(res.stdout)

    by_event = book("--time", "event")
    assert by_event["ts"] == book()["ts"] and len(by_event["bids"]) == 5
    bad = _fluxforge(
        "query", "book", "--config", str(okx_lake), "--exchange", "okx", "--symbol",
        "BTC-USDT", "--at", "2022-05-13T23:00:00Z", "--time", "exchange",
    )  # fmt: skip
    assert bad.returncode == 2 and "--time" in bad.stderr


def test_query_rejects_bad_time_with_clear_message(okx_lake: Path) -> None:
    res = _fluxforge(
        "query", "book", "--config", str(okx_lake), "--exchange", "okx", "--symbol",
        "BTC-USDT", "--at", "noon-ish",
    )  # fmt: skip
    assert res.returncode == 2
    assert "noon-ish" in res.stderr and "ISO-8601" in res.stderr
