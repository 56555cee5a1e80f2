"""Contract between the daemon's `ccxt` source and `fluxforge.venues.ccxt_unified`.

ccxt_unified (and `venues.normalizer_for`, for every ccxt exchange id without a native module)
parses payloads shaped ``{"method": "watch_*|fetch_*", "symbol": ..., "result": <ccxt unified
structure>}``; the source writes that shape (``record: unified``, the default for REST polling
and for exchanges without a native normalizer). This test runs the source in REST mode against
a local HTTP server and feeds what it wrote to the refinery's normalizers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import iter_lines, parse_envelope
from fluxforge.venues import ccxt_unified, normalize
from fluxforge.venues.common import is_ccxt_payload
from ingestion_daemon.service import Daemon
from tests.daemon.test_live_sources import SUSHI_MARKET as MARKET
from tests.daemon.wsserver import http_server
from tests.reliability.conftest import load, ready_files, record_figures


def _record_rest_poll(tmp_path: Path) -> list:
    from aiohttp import web

    served: list[bytes] = []

    async def trades(request: web.Request) -> web.Response:
        n = len(served) + 1
        body = orjson.dumps(
            [{"a": n, "p": "1.2340", "q": "5", "f": n, "l": n, "T": 1626992740000 + n, "m": True}]
        )
        served.append(body)
        return web.Response(body=body, content_type="application/json")

    async def main() -> int:
        routes = {"/fapi/v1/aggTrades": trades, "/fapi/v1/trades": trades}
        async with http_server(routes) as url:
            src = {
                "name": "cx",
                "type": "ccxt",
                "mode": "rest",
                "exchange": "binanceusdm",
                "symbols": ["SUSHI/USDT:USDT"],
                "channels": ["trades"],
                "urls": {"api": {"fapiPublic": f"{url}/fapi/v1"}},
                "markets": [MARKET],
                "poll_interval_s": 0.05,
                "rate_limit": False,
            }
            cfg = load({"storage": {"base_dir": str(tmp_path / "hot")}, "sources": [src]})
            daemon = Daemon(cfg, list(cfg.sources), None)
            task = asyncio.create_task(daemon.run())
            try:
                for _ in range(600):
                    if len(served) >= 3:
                        break
                    await asyncio.sleep(0.05)
            finally:
                daemon.stop.set()
                rc = await task
        return rc

    assert asyncio.run(main()) == 0
    return [
        parse_envelope(line)
        for f in ready_files(tmp_path / "hot", "cx")
        for _, line in iter_lines(f.read_bytes())
    ]


def test_ccxt_source_payload_when_normalized_is_the_unified_shape(tmp_path: Path) -> None:
    envs = _record_rest_poll(tmp_path)
    data = [e for e in envs if e.kind in ("msg", "rest")]
    assert data, "the source recorded nothing"
    unified: list[str] = []  # what ccxt_unified makes of each line
    routed: list[str] = []  # what the refinery's dispatch (venues.normalize) makes of it
    for env in data:
        for out, fn in ((unified, ccxt_unified.normalize), (routed, normalize)):
            try:
                out.append(fn(env, EventSink()))
            except NormalizeError as exc:
                out.append(f"NormalizeError: {exc}")
    print(
        f"\nccxt source (REST, ex={data[0].ex}) wrote {len(data)} {data[0].kind!r} lines, "
        f"payload e.g. {orjson.dumps(data[0].data)[:120]!r}, url {data[0].url!r}\n"
        f"ccxt_unified: {sorted(set(unified))}\nvenues.normalize: {sorted(set(routed))}"
    )
    record_figures(
        "ccxt_payload_contract",
        {
            "lines": len(data),
            "kind": data[0].kind,
            "unified_shape": all(is_ccxt_payload(e.data) for e in data),
            "ccxt_unified": sorted(set(unified)),
            "venues_normalize": sorted(set(routed)),
        },
    )
    assert all(is_ccxt_payload(e.data) for e in data)
    assert set(unified) == {"data"}


def test_ccxt_source_rest_trades_are_written_once_across_overlapping_polls() -> None:
    from fluxforge.config import SourceConfig
    from ingestion_daemon.sources.ccxt_source import CcxtSource

    src = SourceConfig(name="cx", type="ccxt", exchange="kraken", symbols=["BTC/USD"], mode="rest")
    source = CcxtSource(src, load({}))
    assert source.record == "unified"

    def trades(*ids: tuple[int, str]) -> list[dict]:
        return [{"timestamp": ts, "id": tid} for ts, tid in ids]

    first = source._new_trades("BTC/USD", trades((1, "a"), (2, "b"), (2, "c")))
    second = source._new_trades("BTC/USD", trades((2, "b"), (2, "c"), (2, "d"), (3, "e")))
    third = source._new_trades("BTC/USD", trades((2, "d"), (3, "e")))
    assert [t["id"] for t in first] == ["a", "b", "c"]
    assert [t["id"] for t in second] == ["d", "e"]
    assert third == []
