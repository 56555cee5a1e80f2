"""Coinbase Advanced Trade WebSocket (level2, market_trades, ticker, heartbeats).

Options: ``url`` (default ``wss://advanced-trade-ws.coinbase.com``), ``products`` (list of
product ids), ``channels`` (default level2, market_trades, ticker, heartbeats),
``silence_timeout_s``, ``backoff_initial_s``, ``backoff_max_s`` (default: ``ingestion:``),
``check_sequence`` (default true).

One subscribe request per channel (``{"type":"subscribe","product_ids":[...],"channel":C}``).
Every received frame is written verbatim as ``msg`` with the receive time. Control records:
``connect`` (url, attempt), ``subscribe`` (the request as sent), ``disconnect`` (reason, frames on
that connection) and, on every reconnect, ``gap`` (from/to ns: nothing was received in between).
A connection that stays silent for ``silence_timeout_s`` is treated as dead.

Advanced Trade numbers every message of a connection (``sequence_num``, all channels). A jump
means the venue dropped messages, which no later update repairs: the daemon writes a ``gap``
ctl record (reason ``sequence gap``) before the frame that revealed it, so the refinery ends the
book epochs there, then reconnects for fresh snapshots. Lower or repeated numbers are recorded
and not acted on. The number is read with a regex near the frame start, not a JSON parse: the
daemon stays a pipe. ``check_sequence: false`` turns this off.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
import websockets

from fluxforge.config import Config, SourceConfig
from fluxforge.segments import frame_payload
from ingestion_daemon.sources import option_error
from ingestion_daemon.sources.live import live_settings, sleep_or_stop
from ingestion_daemon.writer import SegmentWriter

log = logging.getLogger("ingestion_daemon.coinbase")

DEFAULT_URL = "wss://advanced-trade-ws.coinbase.com"
DEFAULT_CHANNELS = ("level2", "market_trades", "ticker", "heartbeats")


# the envelope keys come first in Advanced Trade frames: the number sits in the first bytes
_SEQUENCE = re.compile(rb'"sequence_num"\s*:\s*(\d+)')
_SEQUENCE_SPAN = 256


class _Silence(Exception):
    pass


class _SequenceGap(Exception):
    pass


class CoinbaseSource:
    live = True
    default_ex = "coinbase"

    def __init__(self, src: SourceConfig, cfg: Config) -> None:
        self.name = src.name
        self.url = str(src.option("url", DEFAULT_URL))
        self.products = list(src.option("products", []))
        self.channels = list(src.option("channels", DEFAULT_CHANNELS))
        if not self.products:
            raise option_error(src, "products", self.products, "a non-empty list like [BTC-USD]")
        if not self.url.startswith(("ws://", "wss://")):
            raise option_error(src, "url", self.url, "a ws:// or wss:// URL")
        self.silence_s, self.backoff = live_settings(src, cfg)
        self.check_sequence = src.option("check_sequence", True)
        if not isinstance(self.check_sequence, bool):
            raise option_error(src, "check_sequence", self.check_sequence, "true or false")
        self.sequence_gaps = 0
        self.connections = 0
        self.frames = 0  # frames written, all connections

    def prepare(self, writer: SegmentWriter) -> None:
        pass

    def _sequence(self, frame: bytes) -> int | None:
        """The frame's ``sequence_num`` (None: not checked, or the frame has none)."""
        if not self.check_sequence:
            return None
        found = _SEQUENCE.search(frame, 0, _SEQUENCE_SPAN)
        return None if found is None else int(found.group(1))

    def requests(self) -> list[bytes]:
        out = []
        for channel in self.channels:
            req: dict = {"type": "subscribe", "channel": channel}
            if channel != "heartbeats":
                req["product_ids"] = self.products
            out.append(orjson.dumps(req))
        return out

    async def run(self, writer: SegmentWriter, stop: asyncio.Event) -> None:
        stop_wait = asyncio.ensure_future(stop.wait())
        disconnected_at: int | None = None
        try:
            while not stop.is_set():
                frames = 0
                reason = "shutdown"
                connected = False
                last_seq: int | None = None
                try:
                    async with websockets.connect(
                        self.url, max_size=None, open_timeout=10, close_timeout=2
                    ) as ws:
                        connected = True
                        now = writer.clock()
                        writer.ctl("connect", now, url=self.url, attempt=self.backoff.attempt)
                        if disconnected_at is not None:
                            writer.ctl(
                                "gap", now, from_ts=disconnected_at, to_ts=now, reason="reconnect"
                            )
                        self.connections += 1
                        for req in self.requests():
                            await ws.send(req.decode())
                            writer.ctl("subscribe", url=self.url, request=orjson.Fragment(req))
                        while True:
                            recv = asyncio.ensure_future(ws.recv(decode=False))
                            done, _ = await asyncio.wait(
                                {recv, stop_wait},
                                timeout=self.silence_s,
                                return_when=asyncio.FIRST_COMPLETED,
                            )
                            if recv not in done:
                                recv.cancel()
                                if stop.is_set():
                                    break
                                raise _Silence(f"no message for {self.silence_s:g} s")
                            frame = recv.result()
                            now = writer.clock()
                            seq = self._sequence(frame)
                            gap = None
                            if seq is not None and last_seq is not None and seq > last_seq + 1:
                                gap = f"sequence gap: {last_seq} then {seq}"
                                writer.ctl("gap", now, from_seq=last_seq, to_seq=seq, reason=gap)
                            if seq is not None and (last_seq is None or seq > last_seq):
                                last_seq = seq
                            writer.append(now, frame_payload(frame))
                            frames += 1
                            self.frames += 1
                            if gap is not None:
                                self.sequence_gaps += 1
                                raise _SequenceGap(gap)
                except _Silence as exc:
                    reason = f"silence: {exc}"
                except _SequenceGap as exc:
                    reason = str(exc)
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if connected:
                    disconnected_at = writer.clock()
                    writer.ctl(
                        "disconnect", disconnected_at, url=self.url, reason=reason, frames=frames
                    )
                if stop.is_set():
                    return
                if frames:
                    self.backoff.reset()
                delay = self.backoff.next_delay()
                log.warning(
                    "%s: %s (%s); reconnecting in %.2f s", self.name, self.url, reason, delay
                )
                if await sleep_or_stop(stop, delay):
                    return
        finally:
            stop_wait.cancel()
