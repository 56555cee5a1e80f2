"""A live Binance USD-M order book through ccxt, end to end: ccxt subscribes to the depth stream
of a real local websocket server replaying the recorded SUSHIUSDT updates, then fetches the REST
depth snapshot from a local HTTP server serving the recorded one. The snapshot answer is held
back until the bridging update and a few more have been received, as happens live (REST is
slower than the stream). The daemon records the frames and the REST body; the refinery must
bridge the book from that snapshot with the updates received before it (Binance's documented
buffering) and book_at must equal an independent rebuild."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from fluxforge import lake
from fluxforge.captures import merge_captures
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import iter_lines, parse_envelope
from fluxforge.storage import LocalStorage
from fluxforge.tables import at_lake_precision
from ingestion_daemon.service import Daemon

from .conftest import make_config, ready_files
from .test_live_sources import SUSHI_MARKET, _run_until
from .wsserver import ReplayServer, http_server, wait_until

AFTER_BRIDGE = 3  # updates the stream delivers past the bridge before the snapshot answer


def _sushi(captures: Path) -> tuple[list[dict], bytes, dict]:
    files = sorted((captures / "BINANCE_FUTURES").glob("BINANCE_FUTURES.*.*"))
    updates, body = [], b""
    for rec in merge_captures(files):
        if rec.kind == "rest" and "symbol=SUSHIUSDT" in (rec.url or ""):
            body = rec.payload
        elif rec.kind == "recv":
            data = orjson.loads(rec.payload)["data"]
            if data.get("e") == "depthUpdate" and data["s"] == "SUSHIUSDT":
                updates.append(data)
    assert body and len(updates) > 50
    return updates, body, orjson.loads(body)


def _reference(snap: dict, updates: list[dict]) -> tuple[list, list]:
    """Binance's rules: drop u < lastUpdateId, bridge U <= lastUpdateId <= u, then pu chain."""
    bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
    asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
    last = None
    for ev in updates:
        if last is None:
            if ev["u"] < snap["lastUpdateId"]:
                continue
            assert ev["U"] <= snap["lastUpdateId"] <= ev["u"]
        else:
            assert ev["pu"] == last
        last = ev["u"]
        for book, key in ((bids, "b"), (asks, "a")):
            for p, q in ev[key]:
                if Decimal(q) == 0:
                    book.pop(Decimal(p), None)
                else:
                    book[Decimal(p)] = Decimal(q)
    return sorted(bids.items(), reverse=True)[:10], sorted(asks.items())[:10]


@pytest.mark.slow
def test_ccxt_binance_book_bridges_updates_received_before_the_rest_snapshot(
    captures: Path, tmp_path: Path
) -> None:
    from aiohttp import web

    updates, body, snap = _sushi(captures)
    bridge = next(i for i, ev in enumerate(updates) if ev["u"] >= snap["lastUpdateId"])
    assert updates[bridge]["U"] <= snap["lastUpdateId"]
    frames = [orjson.dumps(ev).decode() for ev in updates]

    def ack(request: str) -> str | None:
        return orjson.dumps({"result": None, "id": orjson.loads(request).get("id")}).decode()

    server = ReplayServer(frames, plan=[(len(frames), "stay")], subscribes=1, reply=ack)
    served: list[str] = []

    async def depth(request: web.Request) -> web.Response:
        await wait_until(lambda: server.cursor > bridge + AFTER_BRIDGE, timeout=30)
        await asyncio.sleep(0.2)  # the client has read those frames
        served.append(str(request.rel_url))
        return web.Response(body=body, content_type="application/json")

    async def main() -> int:
        async with http_server({"/fapi/v1/depth": depth}) as rest_url, server.running():
            src = {
                "name": "bnbook",
                "type": "ccxt",
                "exchange": "binanceusdm",
                "symbols": ["SUSHI/USDT:USDT"],
                "channels": ["orderbook"],
                "urls": {
                    "api": {
                        "ws": {"linear": server.url + "/ws"},
                        "fapiPublic": f"{rest_url}/fapi/v1",
                    }
                },
                "markets": [SUSHI_MARKET],
                "rate_limit": False,
                "silence_timeout_s": 30,
            }
            cfg = make_config(tmp_path, [src])
            daemon = Daemon(cfg, list(cfg.sources), None)
            return await _run_until(daemon, lambda: bool(served) and server.cursor == len(frames))

    assert asyncio.run(main()) == 0
    assert len(served) >= 1 and "symbol=SUSHIUSDT" in served[0]

    recorded = [
        parse_envelope(line)
        for f in ready_files(tmp_path / "hot", "bnbook")
        for _, line in iter_lines(f.read_bytes())
    ]
    kinds = [(e.kind, e) for e in recorded if e.kind in ("msg", "rest")]
    rest_at = next(i for i, (k, e) in enumerate(kinds) if k == "rest" and "/depth" in e.url)
    msgs_before = [e for k, e in kinds[:rest_at] if k == "msg" and "depthUpdate" in str(e.data)]
    # the bridging update was recorded BEFORE the snapshot: only buffering can use it
    assert len(msgs_before) > bridge + AFTER_BRIDGE
    last_ts = max(e.ts for k, e in kinds if k == "msg")
    # the book exists from the snapshot's arrival on: replayed updates become known then
    at = max(last_ts, kinds[rest_at][1].ts)

    cfg = make_config(tmp_path, [])
    report = process_ready(cfg)
    assert report.failed == []
    books = {(b["exchange"], b["symbol"]): b for b in report.to_dict()["books"]}
    book = books[("binanceusdm", "SUSHI-USDT")]
    assert book["chain_breaks"] == 0 and book["bridges"] == 1, str(book)
    # the only gap is the end of the connection when the daemon stopped, after the last update
    gaps = lake.read_table(LocalStorage(tmp_path / "hot"), "gap_ledger").to_pylist()
    # (the lake keeps times to the microsecond: tables.at_lake_precision)
    at = at_lake_precision(at)
    assert [(g["cause"], g["ts_from"] >= at) for g in gaps] == [("reconnect", True)]

    want_b, want_a = _reference(snap, updates)
    got = Reader(cfg).book_at("binanceusdm", "SUSHI-USDT", at, depth=10)
    assert [(p, q) for p, q in got.bids] == want_b
    assert [(p, q) for p, q in got.asks] == want_a

    # the same recording with buffering switched off in the config: every update received
    # before the snapshot is lost, and the book stays at the older snapshot
    import shutil

    other = tmp_path / "unbuffered"
    shutil.copytree(tmp_path / "hot/raw/archive/bnbook", other / "hot/raw/ready/bnbook")
    off = make_config(other, [], refinery={"presync_buffer": 0})
    report = process_ready(off)
    book = {(b["exchange"], b["symbol"]): b for b in report.to_dict()["books"]}
    stats = book[("binanceusdm", "SUSHI-USDT")]
    assert (stats["buffered"], stats["replayed"]) == (0, 0), stats
    assert stats["dropped_presync"] == len(msgs_before), stats
    stale = Reader(off).book_at("binanceusdm", "SUSHI-USDT", at, depth=10)
    assert (stale.bids, stale.asks) != (got.bids, got.asks)
