"""Seeded market simulator in Coinbase Advanced Trade message shapes (the embedded default).

Options: ``symbols`` (default BTC-USD, ETH-USD, SOL-USD), ``rate`` (messages/s over all symbols,
default 200), ``seed`` (default 42), ``depth`` (levels per side in the snapshot, default 50),
``max_messages`` (stop after that many feed messages: burst mode for tests; default unlimited).

Per symbol the feed opens with a ``subscriptions`` ack and an ``l2_data`` snapshot, then carries
``l2_data`` updates (``new_quantity`` is the absolute level size, "0" removes it; the book never
crosses), ``market_trades`` at the touch, ``ticker`` after trades, and a ``heartbeats`` frame per
second, with one connection-wide ``sequence_num``. The same seed gives the same message stream.
"""

from __future__ import annotations

import asyncio
import random
import time

import orjson

from fluxforge.config import Config, SourceConfig
from ingestion_daemon.sources import option_error
from ingestion_daemon.writer import SegmentWriter

_START_MIDS = {"BTC-USD": 6_500_000, "ETH-USD": 350_000, "SOL-USD": 15_000}  # in cents


def iso_ns(ts: int) -> str:
    secs, ns = divmod(ts, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns:09d}Z"


def _px(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


class _Book:
    def __init__(self, symbol: str, rng: random.Random, depth: int) -> None:
        self.symbol = symbol
        self.rng = rng
        self.mid = _START_MIDS.get(symbol, rng.randint(1_000, 100_000))
        self.depth = depth
        self.bids = {self.mid - k: self._qty() for k in range(1, depth + 1)}
        self.asks = {self.mid + k: self._qty() for k in range(1, depth + 1)}
        self.trade_id = rng.randint(1_000_000, 9_000_000)
        self.last = self.mid

    def _qty(self) -> str:
        return f"{self.rng.randint(1, 5_000_000) / 1e4:.8f}"

    def snapshot(self, t: str) -> list[dict]:
        bids = [
            {"side": "bid", "event_time": t, "price_level": _px(p), "new_quantity": q}
            for p, q in sorted(self.bids.items(), reverse=True)
        ]
        asks = [
            {"side": "offer", "event_time": t, "price_level": _px(p), "new_quantity": q}
            for p, q in sorted(self.asks.items())
        ]
        return bids + asks

    def update(self, t: str) -> list[dict]:
        rng = self.rng
        out = []
        if rng.random() < 0.05:  # the mid moves a tick; levels it crosses are removed
            self.mid += rng.choice((-1, 1))
            for p in [p for p in self.bids if p >= self.mid]:
                del self.bids[p]
                out.append(("bid", p, "0"))
            for p in [p for p in self.asks if p <= self.mid]:
                del self.asks[p]
                out.append(("offer", p, "0"))
        side = rng.choice(("bid", "offer"))
        k = min(int(rng.expovariate(0.2)) + 1, self.depth)
        price = self.mid - k if side == "bid" else self.mid + k
        levels = self.bids if side == "bid" else self.asks
        qty = "0" if rng.random() < 0.2 and price in levels else self._qty()
        if qty == "0":
            del levels[price]
        else:
            levels[price] = qty
        out.append((side, price, qty))
        return [
            {"side": s, "event_time": t, "price_level": _px(p), "new_quantity": q}
            for s, p, q in out
        ]

    def trade(self, t: str) -> dict:
        rng = self.rng
        buy = rng.random() < 0.5
        levels = self.asks if buy else self.bids
        price = (min if buy else max)(levels) if levels else self.mid
        self.trade_id += 1
        self.last = price
        return {
            "trade_id": str(self.trade_id),
            "product_id": self.symbol,
            "price": _px(price),
            "size": f"{rng.randint(1, 20_000) / 1e4:.8f}",
            "side": "BUY" if buy else "SELL",
            "time": t,
        }

    def ticker(self) -> dict:
        bid = max(self.bids) if self.bids else self.mid - 1
        ask = min(self.asks) if self.asks else self.mid + 1
        return {
            "type": "ticker",
            "product_id": self.symbol,
            "price": _px(self.last),
            "volume_24_h": "12345.67890000",
            "low_24_h": _px(self.mid - 500),
            "high_24_h": _px(self.mid + 500),
            "low_52_w": _px(self.mid // 2),
            "high_52_w": _px(self.mid * 2),
            "price_percent_chg_24_h": "0.42",
            "best_bid": _px(bid),
            "best_bid_quantity": self.bids.get(bid, "0"),
            "best_ask": _px(ask),
            "best_ask_quantity": self.asks.get(ask, "0"),
        }


class SyntheticSource:
    live = True
    default_ex = "coinbase"

    def __init__(self, src: SourceConfig, cfg: Config) -> None:
        self.name = src.name
        self.symbols = list(src.option("symbols", ["BTC-USD", "ETH-USD", "SOL-USD"]))
        self.rate = float(src.option("rate", 200))
        self.seed = src.option("seed", 42)
        self.depth = int(src.option("depth", 50))
        self.max_messages = src.option("max_messages")
        if not self.symbols or not all(isinstance(s, str) for s in self.symbols):
            raise option_error(src, "symbols", self.symbols, "a non-empty list of BASE-QUOTE")
        if self.rate <= 0:
            raise option_error(src, "rate", self.rate, "messages per second, > 0")
        self.rng = random.Random(self.seed)
        self.books = {s: _Book(s, self.rng, self.depth) for s in self.symbols}
        self.sequence = 0
        self.sent = 0

    def prepare(self, writer: SegmentWriter) -> None:
        pass

    def _frame(self, channel: str, ts: int, events: list[dict]) -> bytes:
        msg = {
            "channel": channel,
            "client_id": "",
            "timestamp": iso_ns(ts),
            "sequence_num": self.sequence,
            "events": events,
        }
        self.sequence += 1
        return orjson.dumps(msg)

    def _opening(self, writer: SegmentWriter) -> None:
        ts = writer.clock()
        writer.ctl("connect", ts, url="synthetic://coinbase-advanced-trade", seed=self.seed)
        channels = ["level2", "market_trades", "ticker", "heartbeats"]
        writer.ctl("subscribe", ts, channels=channels, product_ids=self.symbols)
        subs = {c: list(self.symbols) for c in channels[:3]} | {"heartbeats": ["heartbeats"]}
        writer.append(ts, self._frame("subscriptions", ts, [{"subscriptions": subs}]))
        for sym, book in self.books.items():
            t = iso_ns(ts)
            event = {"type": "snapshot", "product_id": sym, "updates": book.snapshot(t)}
            writer.append(ts, self._frame("l2_data", ts, [event]))
            self.sent += 1

    def _one(self, writer: SegmentWriter, ts: int) -> None:
        book = self.books[self.rng.choice(self.symbols)]
        t = iso_ns(ts)
        r = self.rng.random()
        if r < 0.85:
            event = {"type": "update", "product_id": book.symbol, "updates": book.update(t)}
            writer.append(ts, self._frame("l2_data", ts, [event]))
        elif r < 0.95:
            trade = book.trade(t)
            writer.append(
                ts, self._frame("market_trades", ts, [{"type": "update", "trades": [trade]}])
            )
        else:
            writer.append(
                ts, self._frame("ticker", ts, [{"type": "update", "tickers": [book.ticker()]}])
            )
        self.sent += 1

    async def run(self, writer: SegmentWriter, stop: asyncio.Event) -> None:
        self._opening(writer)
        started = time.monotonic()
        emitted = 0
        beats = 0
        while not stop.is_set():
            if self.max_messages is not None and self.sent >= self.max_messages:
                return
            elapsed = time.monotonic() - started
            due = int(elapsed * self.rate) - emitted
            if self.max_messages is not None:
                due = min(due, self.max_messages - self.sent)
            for _ in range(max(due, 0)):
                self._one(writer, writer.clock())
            emitted += max(due, 0)
            if int(elapsed) > beats:
                beats = int(elapsed)
                ts = writer.clock()
                event = {"current_time": iso_ns(ts), "heartbeat_counter": str(beats)}
                writer.append(ts, self._frame("heartbeats", ts, [event]))
            await asyncio.sleep(min(0.01, max(1.0 / self.rate, 0.001)))
