"""Live sources against a real websocket server on 127.0.0.1 replaying recorded frames and
dropping the connection mid-stream: every frame the server sent is recorded exactly once, in
order; reconnects are logged as ctl records and subscriptions are sent again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from fluxforge.captures import read_capture
from fluxforge.segments import is_own_ctl, iter_lines, parse_envelope, raw_payload
from ingestion_daemon.service import Daemon

from .conftest import make_config, ready_files
from .wsserver import ReplayServer, http_server, wait_until


def _recorded(root: Path, source: str) -> list[tuple[object, bytes]]:
    out = []
    for f in ready_files(root, source):
        for _, line in iter_lines(f.read_bytes()):
            out.append((parse_envelope(line), line))
    return out


async def _run_until(daemon: Daemon, done) -> int:
    task = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: bool(daemon.units) and done(), timeout=90)
    finally:
        daemon.stop.set()
    return await task


def test_coinbase_source_reconnects_resubscribes_and_loses_no_frame(captures: Path, tmp_path: Path):
    cap = captures / "COINBASE" / "COINBASE.ws.28.0"
    frames = [r.payload.decode() for r in read_capture(cap) if r.kind == "recv"][:2000]
    server = ReplayServer(frames, plan=[(700, "drop"), (500, "silent")], subscribes=2)

    async def main() -> int:
        async with server.running():
            src = {
                "name": "cb",
                "type": "coinbase",
                "url": server.url,
                "products": ["SKL-USD", "BAND-BTC"],
                "channels": ["level2", "market_trades"],
                "silence_timeout_s": 0.5,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.2,
            }
            cfg = make_config(tmp_path, [src])
            daemon = Daemon(cfg, list(cfg.sources), None)
            return await _run_until(
                daemon,
                lambda: daemon.units[0][0].frames >= len(frames),  # type: ignore[attr-defined]
            )

    assert asyncio.run(main()) == 0
    rec = _recorded(tmp_path / "hot", "cb")
    assert [e.seq for e, _ in rec] == list(range(len(rec)))
    msgs = [raw_payload(line).decode() for e, line in rec if e.kind == "msg"]
    assert msgs == server.sent == frames
    events = [e.data["event"] for e, _ in rec if e.kind == "ctl" and not is_own_ctl(e)]
    assert events.count("connect") == 3
    assert events.count("gap") == 2
    assert events.count("subscribe") == 6
    assert events.count("disconnect") == 3  # drop, silence, shutdown
    reasons = [
        e.data["reason"] for e, _ in rec if e.kind == "ctl" and e.data["event"] == "disconnect"
    ]
    assert "silence" in reasons[1]
    assert len(server.requests) == 3
    for conn in server.requests:
        reqs = [orjson.loads(r) for r in conn]
        assert {r["channel"] for r in reqs} == {"level2", "market_trades"}
        assert all(r["type"] == "subscribe" and r["product_ids"] for r in reqs)


SUSHI_MARKET = {
    "id": "SUSHIUSDT",
    "lowercaseId": "sushiusdt",
    "symbol": "SUSHI/USDT:USDT",
    "base": "SUSHI",
    "quote": "USDT",
    "settle": "USDT",
    "baseId": "SUSHI",
    "quoteId": "USDT",
    "settleId": "USDT",
    "type": "swap",
    "spot": False,
    "margin": False,
    "swap": True,
    "future": False,
    "option": False,
    "active": True,
    "contract": True,
    "linear": True,
    "inverse": False,
    "contractSize": 1,
    "precision": {"amount": 1, "price": 0.001},
    "limits": {},
    "info": {},
}


def test_ccxt_source_records_raw_frames_across_a_dropped_connection(captures: Path, tmp_path: Path):
    cap = captures / "BINANCE_FUTURES" / "BINANCE_FUTURES.ws.1.0"
    frames = [
        orjson.dumps(orjson.loads(r.payload)["data"]).decode()
        for r in read_capture(cap)
        if r.kind == "recv" and b'"sushiusdt@aggTrade"' in r.payload
    ]
    assert len(frames) > 10

    def ack(request: str) -> str | None:
        req = orjson.loads(request)
        return orjson.dumps({"result": None, "id": req.get("id")}).decode()

    half = len(frames) // 2
    server = ReplayServer(frames, plan=[(half, "drop")], subscribes=1, reply=ack)

    async def main() -> int:
        async with server.running():
            src = {
                "name": "bn",
                "type": "ccxt",
                "exchange": "binanceusdm",
                "symbols": ["SUSHI/USDT:USDT"],
                "channels": ["trades"],
                "params": {"name": "aggTrade"},
                "urls": {"api": {"ws": {"linear": server.url + "/ws"}}},
                "markets": [SUSHI_MARKET],
                "silence_timeout_s": 5,
                "rate_limit": False,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.2,
            }
            cfg = make_config(tmp_path, [src])
            daemon = Daemon(cfg, list(cfg.sources), None)
            # the acks are frames too: one per connection
            return await _run_until(
                daemon,
                lambda: daemon.units[0][0].frames >= len(frames) + 2,  # type: ignore[attr-defined]
            )

    assert asyncio.run(main()) == 0
    rec = _recorded(tmp_path / "hot", "bn")
    assert [e.seq for e, _ in rec] == list(range(len(rec)))
    assert {e.ex for e, _ in rec} == {"binanceusdm"}
    msgs = [raw_payload(line).decode() for e, line in rec if e.kind == "msg"]
    data = [m for m in msgs if '"result"' not in m]
    assert data == server.sent == frames
    events = [e.data["event"] for e, _ in rec if e.kind == "ctl" and not is_own_ctl(e)]
    assert events.count("connect") == 2 and events.count("gap") == 1
    assert events.count("subscribe") >= 2
    assert len(server.requests) == 2
    for conn in server.requests:
        assert orjson.loads(conn[0])["params"] == ["sushiusdt@aggTrade"]


def test_ccxt_source_rest_polling_records_response_bodies_and_survives_errors(tmp_path: Path):
    from aiohttp import web

    bodies: list[str] = []
    hits = {"n": 0}

    async def trades(request: web.Request) -> web.Response:
        hits["n"] += 1
        if hits["n"] == 2:  # the venue has a bad moment
            return web.Response(status=503, text="busy")
        body = orjson.dumps(
            [{"a": hits["n"], "p": "1.2340", "q": "5", "T": 1626992740000 + hits["n"], "m": True}]
        ).decode()
        bodies.append(body)
        return web.Response(text=body, content_type="application/json")

    async def main() -> int:
        routes = {"/fapi/v1/aggTrades": trades, "/fapi/v1/trades": trades}
        async with http_server(routes) as url:
            src = {
                "name": "bnrest",
                "type": "ccxt",
                "mode": "rest",
                "record": "raw",
                "exchange": "binanceusdm",
                "symbols": ["SUSHI/USDT:USDT"],
                "channels": ["trades"],
                "urls": {"api": {"fapiPublic": f"{url}/fapi/v1"}},
                "markets": [SUSHI_MARKET],
                "poll_interval_s": 0.05,
                "rate_limit": False,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.1,
            }
            cfg = make_config(tmp_path, [src])
            daemon = Daemon(cfg, list(cfg.sources), None)
            return await _run_until(daemon, lambda: len(bodies) >= 4)

    assert asyncio.run(main()) == 0
    rec = _recorded(tmp_path / "hot", "bnrest")
    rests = [(e, line) for e, line in rec if e.kind == "rest"]
    ok = [raw_payload(line).decode() for e, line in rests if raw_payload(line) != b'"busy"']
    assert ok[: len(bodies)] == bodies[: len(ok)] and len(ok) >= 4
    assert all("/fapi/v1/" in (e.url or "") for e, _ in rests)
    gaps = [e for e, _ in rec if e.kind == "ctl" and e.data["event"] == "gap"]
    assert len(gaps) == 1 and "poll failed" in gaps[0].data["reason"]
