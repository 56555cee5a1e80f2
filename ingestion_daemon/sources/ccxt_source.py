"""Any ccxt exchange, through ccxt.pro's websocket ``watch_*`` methods or REST polling.

Options: ``exchange`` (ccxt id; ccxt's ids are FluxForge's ``ex`` ids: binance, binanceusdm,
coinbase, kraken, okx, bitget, ...), ``symbols`` (unified, e.g. ``BTC/USDT``), ``channels``
(``trades``, ``orderbook``, ``ticker``; default trades), ``mode`` (``ws`` | ``rest``),
``urls`` (deep-merged into the exchange's ccxt ``urls``, e.g. ``{api: {ws: {linear: ws://...}}}``),
``options`` (ccxt ``options``), ``params`` (extra params for every watch/fetch call),
``markets`` (a list of ccxt market dicts given to ``set_markets``, to skip the network
``load_markets``), ``poll_interval_s`` (REST, default 1), ``rate_limit`` (ccxt's own request
throttle, default true), ``silence_timeout_s``,
``backoff_initial_s``, ``backoff_max_s``.

``record`` chooses what is written:

- ``raw``: the exchange's own bytes. In ws mode every frame the connection receives is written
  verbatim as ``msg`` (hooked where ccxt's client reads it, before parsing), and every REST
  response body is written as ``rest`` with its URL (in ws mode these are the depth snapshots
  ccxt fetches to start a Binance book, plus any metadata it loads). Only useful where
  FluxForge has a native normalizer for the exchange's wire format (``fluxforge.venues``), so
  it is the default for ws mode on those exchanges.
- ``unified`` (the default otherwise): each result of a ``watch_*`` / ``fetch_*`` call is written
  as ``msg`` ``{"method", "symbol", "result": <ccxt unified structure>}``, the shape
  ``fluxforge.venues.ccxt_unified`` reads for any exchange. REST polling re-fetches the latest
  trades, so trades already written (same timestamp and id) are left out.

``watch_*`` calls drive the subscriptions; ccxt reconnects by resubscribing on the next call.
Control records: ``connect`` / ``disconnect`` per websocket connection, ``subscribe`` for every
request ccxt sends, ``gap`` on every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from fluxforge.config import Config, SourceConfig
from fluxforge.segments import frame_payload
from ingestion_daemon.sources import option_error
from ingestion_daemon.sources.live import live_settings, sleep_or_stop
from ingestion_daemon.writer import SegmentWriter

log = logging.getLogger("ingestion_daemon.ccxt")

WATCH = {"trades": "watch_trades", "orderbook": "watch_order_book", "ticker": "watch_ticker"}
FETCH = {"trades": "fetch_trades", "orderbook": "fetch_order_book", "ticker": "fetch_ticker"}


class CcxtSource:
    live = True

    def __init__(self, src: SourceConfig, cfg: Config) -> None:
        self.name = src.name
        self.exchange_id = src.option("exchange")
        if not isinstance(self.exchange_id, str) or not self.exchange_id:
            raise option_error(src, "exchange", self.exchange_id, "a ccxt exchange id")
        self.default_ex = self.exchange_id.lower()
        self.symbols = list(src.option("symbols", []))
        if not self.symbols:
            raise option_error(src, "symbols", self.symbols, "a non-empty list like [BTC/USDT]")
        self.channels = list(src.option("channels", ["trades"]))
        bad = [c for c in self.channels if c not in WATCH]
        if bad:
            raise option_error(src, "channels", bad, f"allowed {sorted(WATCH)}")
        self.mode = src.option("mode", "ws")
        if self.mode not in ("ws", "rest"):
            raise option_error(src, "mode", self.mode, "ws | rest")
        self.urls = dict(src.option("urls") or {})
        self.ccxt_options = dict(src.option("options") or {})
        self.params = dict(src.option("params") or {})
        self.markets = src.option("markets")
        self.poll_interval_s = float(src.option("poll_interval_s", 1.0))
        self.rate_limit = bool(src.option("rate_limit", True))
        from fluxforge.venues import EXCHANGES as NATIVE

        native_ws = self.mode == "ws" and self.default_ex in NATIVE
        self.record = src.option("record", "raw" if native_ws else "unified")
        if self.record not in ("raw", "unified"):
            raise option_error(src, "record", self.record, "raw | unified")
        # REST trades already written per symbol: (last timestamp, ids seen at that timestamp)
        self._trade_marks: dict[str, tuple[int, set[str]]] = {}
        self.silence_s, self.backoff = live_settings(src, cfg)
        self.frames = 0
        self.connections = 0
        self._open: set[str] = set()
        self._disconnected_at: int | None = None
        self._last_frame = time.monotonic()

    def prepare(self, writer: SegmentWriter) -> None:
        pass

    # ------------------------------------------------------------------ recording hooks

    def _on_frame(self, writer: SegmentWriter, data: Any) -> None:
        self._last_frame = time.monotonic()
        if self.record != "raw":
            return
        raw = data.encode() if isinstance(data, str) else bytes(data)
        writer.append(writer.clock(), frame_payload(raw))
        self.frames += 1

    def _on_result(self, writer: SegmentWriter, method: str, symbol: str, result: Any) -> None:
        """unified mode: one line per call result (new REST trades only)."""
        if self.record != "unified" or result is None:
            return
        if method == "fetch_trades":
            result = self._new_trades(symbol, result)
            if not result:
                return
        payload = {"method": method, "symbol": symbol, "result": result}
        writer.append(writer.clock(), orjson.dumps(payload, default=str))
        self.frames += 1

    def _new_trades(self, symbol: str, trades: list[dict]) -> list[dict]:
        last_ts, seen = self._trade_marks.get(symbol, (-1, set()))
        fresh = []
        for trade in trades:
            ts, tid = int(trade.get("timestamp") or 0), str(trade.get("id"))
            if ts > last_ts or (ts == last_ts and tid not in seen):
                fresh.append(trade)
        if fresh:
            top = max(int(t.get("timestamp") or 0) for t in fresh)
            ids = {str(t.get("id")) for t in trades if int(t.get("timestamp") or 0) == top}
            self._trade_marks[symbol] = (top, ids | (seen if top == last_ts else set()))
        return fresh

    def _on_connect(self, writer: SegmentWriter, url: str) -> None:
        now = writer.clock()
        self._open.add(url)
        self.connections += 1
        self._last_frame = time.monotonic()
        writer.ctl("connect", now, url=url, attempt=self.backoff.attempt)
        if self._disconnected_at is not None:
            writer.ctl("gap", now, from_ts=self._disconnected_at, to_ts=now, reason="reconnect")

    def _on_disconnect(self, writer: SegmentWriter, url: str, reason: str) -> None:
        if url not in self._open:
            return
        self._open.discard(url)
        self._disconnected_at = writer.clock()
        writer.ctl("disconnect", self._disconnected_at, url=url, reason=reason)

    def _exchange(self, writer: SegmentWriter) -> Any:
        source = self
        if self.mode == "ws":
            import ccxt.pro as module
        else:
            import ccxt.async_support as module
        try:
            base = getattr(module, self.exchange_id)
        except AttributeError:
            raise ValueError(
                f"sources[{self.name}].exchange = {self.exchange_id!r}: not a ccxt "
                f"{'pro ' if self.mode == 'ws' else ''}exchange"
            ) from None

        class Recording(base):  # type: ignore[misc, valid-type]
            def client(self, url):  # websocket: hook the raw frames and the sent requests
                client = super().client(url)
                if not getattr(client, "_ff_hooked", False):
                    client._ff_hooked = True
                    handle = client.handle_text_or_binary_message
                    send = client.send

                    def handle_raw(data, _handle=handle):
                        source._on_frame(writer, data)
                        return _handle(data)

                    async def send_logged(message, _send=send, _url=url):
                        writer.ctl("subscribe", url=_url, request=message)
                        return await _send(message)

                    client.handle_text_or_binary_message = handle_raw
                    client.send = send_logged
                return client

            def on_connected(self, client, message=None):
                source._on_connect(writer, client.url)
                return super().on_connected(client, message)

            def on_close(self, client, error):
                source._on_disconnect(writer, client.url, f"closed ({error})")
                return super().on_close(client, error)

            def on_error(self, client, error):
                source._on_disconnect(writer, client.url, f"error: {error}")
                return super().on_error(client, error)

            def on_rest_response(self, code, reason, url, method, headers, body, *rest):
                # in ws mode too: ccxt fetches a REST depth snapshot to start a Binance book,
                # and the refinery needs that very snapshot to bridge the recorded updates
                if source.record == "raw":
                    writer.append_rest(writer.clock(), frame_payload(body or "null"), url)
                    source.frames += 1
                return super().on_rest_response(code, reason, url, method, headers, body, *rest)

        config: dict[str, Any] = {"enableRateLimit": self.rate_limit, "newUpdates": True}
        if self.urls:
            config["urls"] = self.urls
        if self.ccxt_options:
            config["options"] = self.ccxt_options
        exchange = Recording(config)
        if self.markets:
            exchange.set_markets(self.markets)
        return exchange

    # ------------------------------------------------------------------ loops

    async def _watch(self, exchange: Any, method: str, symbol: str, stop: asyncio.Event) -> None:
        import ccxt

        while not stop.is_set():
            try:
                result = await getattr(exchange, method)(symbol, params=dict(self.params))
                self._on_result(self._writer, method, symbol, result)
                self.backoff.reset()
            except (ccxt.BaseError, OSError, TimeoutError) as exc:
                delay = self.backoff.next_delay()
                log.warning(
                    "%s: %s(%s): %s; retrying in %.2f s", self.name, method, symbol, exc, delay
                )
                if await sleep_or_stop(stop, delay):
                    return

    async def _silence_guard(self, exchange: Any, stop: asyncio.Event) -> None:
        """A connection without any frame for silence_timeout_s is closed (ccxt then rejects the
        pending watches and the next watch reconnects and resubscribes)."""
        while not await sleep_or_stop(stop, max(self.silence_s / 4, 0.05)):
            if time.monotonic() - self._last_frame < self.silence_s:
                continue
            for client in list((exchange.clients or {}).values()):
                self._on_disconnect(self._writer, client.url, "silence")
                with contextlib.suppress(Exception):
                    await client.close()
            with contextlib.suppress(Exception):
                exchange.clients.clear()
            self._last_frame = time.monotonic()

    async def _poll(self, exchange: Any, stop: asyncio.Event) -> None:
        import ccxt

        while not stop.is_set():
            for channel in self.channels:
                for symbol in self.symbols:
                    try:
                        method = FETCH[channel]
                        result = await getattr(exchange, method)(symbol, params=dict(self.params))
                        self._on_result(self._writer, method, symbol, result)
                        self.backoff.reset()
                    except (ccxt.BaseError, OSError, TimeoutError) as exc:
                        now = self._writer.clock()
                        self._writer.ctl("gap", now, reason=f"poll failed: {exc}", symbol=symbol)
                        if await sleep_or_stop(stop, self.backoff.next_delay()):
                            return
            if await sleep_or_stop(stop, self.poll_interval_s):
                return

    async def run(self, writer: SegmentWriter, stop: asyncio.Event) -> None:
        self._writer = writer
        exchange = self._exchange(writer)
        tasks: list[asyncio.Task] = []
        try:
            if self.mode == "rest":
                await self._poll(exchange, stop)
                return
            tasks = [
                asyncio.create_task(self._watch(exchange, WATCH[c], s, stop))
                for c in self.channels
                for s in self.symbols
            ]
            tasks.append(asyncio.create_task(self._silence_guard(exchange, stop)))
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for url in list(self._open):
                self._on_disconnect(writer, url, "shutdown")
            with contextlib.suppress(Exception):
                await exchange.close()
