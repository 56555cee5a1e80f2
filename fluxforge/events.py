"""The normalized event contract between venue normalizers, the book engine and the lake.

Venue normalizers (``fluxforge/venues/<venue>.py``) turn one raw envelope into calls on an
``EventSink``: trades and quotes go straight into column lists; book messages are collected as
``BookMessage`` objects per (exchange, symbol) and fed, in receive order, to the book engine
(``fluxforge/book``), which verifies integrity, assigns ``book_epoch`` and injects snapshots.

Prices and sizes stay the exact wire strings here; the lake casts them to decimal128(38, 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Integrity rule carried by a book message (see ../shared/data/README.md "Integrity rules").
CHECKSUM_KRAKEN = "kraken"  # top 10 asks then bids, f(x)=x.replace('.','').lstrip('0'), unsigned
CHECKSUM_OKX = "okx"  # top 25 interleaved bid:ask "px:sz", signed crc32 (OKX and Bitget)
CHAIN_BINANCE_FUTURES = "binance_futures"  # U <= lastUpdateId <= u, then pu == previous u
CHAIN_BINANCE_SPOT = "binance_spot"  # U <= lastUpdateId+1 <= u, then U == previous u + 1


class NormalizeError(ValueError):
    """The message cannot be normalized; the text is the quarantine reason."""


@dataclass(slots=True)
class BookMessage:
    """One book update or snapshot for one instrument, levels as exact wire strings.

    `bids`/`asks` are (price, size) pairs; size "0" (any zero) removes the level. For a
    snapshot the book is replaced. `first_id`/`final_id`/`prev_id` carry the venue's update
    ids (-1 when absent). `checksum` is the venue's value for the book AFTER applying this
    message. `depth` is the depth the venue maintains (Kraken truncates to it; 0 = unlimited).
    """

    exchange: str
    symbol: str
    venue_symbol: str
    channel: str
    ts_event: int
    ts_recv: int
    seq: int
    is_snapshot: bool
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    first_id: int = -1
    final_id: int = -1
    prev_id: int = -1
    checksum: int | None = None
    checksum_kind: str | None = None
    chain: str | None = None
    depth: int = 0
    from_rest: bool = False


@dataclass(slots=True)
class TopOfBook:
    """A venue's own best bid/ask report (e.g. Binance bookTicker), for cross-checks."""

    exchange: str
    symbol: str
    update_id: int
    bid_px: str
    bid_sz: str
    ask_px: str
    ask_sz: str
    ts_recv: int


@dataclass
class EventSink:
    """Column lists filled by the normalizers for one segment."""

    trades: dict[str, list] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "exchange",
                "symbol",
                "venue_symbol",
                "ts_event",
                "ts_recv",
                "trade_id",
                "price",
                "size",
                "side",
                "seq",
            )
        }
    )
    quotes: dict[str, list] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "exchange",
                "symbol",
                "venue_symbol",
                "ts_event",
                "ts_recv",
                "bid_px",
                "bid_sz",
                "ask_px",
                "ask_sz",
                "last",
                "seq",
            )
        }
    )
    books: list[BookMessage] = field(default_factory=list)
    tops: list[TopOfBook] = field(default_factory=list)

    def trade(
        self,
        exchange: str,
        symbol: str,
        venue_symbol: str,
        ts_event: int,
        ts_recv: int,
        trade_id: str,
        price: str,
        size: str,
        side: str,
        seq: int,
    ) -> None:
        t = self.trades
        t["exchange"].append(exchange)
        t["symbol"].append(symbol)
        t["venue_symbol"].append(venue_symbol)
        t["ts_event"].append(ts_event)
        t["ts_recv"].append(ts_recv)
        t["trade_id"].append(trade_id)
        t["price"].append(price)
        t["size"].append(size)
        t["side"].append(side)
        t["seq"].append(seq)

    def quote(
        self,
        exchange: str,
        symbol: str,
        venue_symbol: str,
        ts_event: int,
        ts_recv: int,
        bid_px: str | None,
        bid_sz: str | None,
        ask_px: str | None,
        ask_sz: str | None,
        last: str | None,
        seq: int,
    ) -> None:
        q = self.quotes
        q["exchange"].append(exchange)
        q["symbol"].append(symbol)
        q["venue_symbol"].append(venue_symbol)
        q["ts_event"].append(ts_event)
        q["ts_recv"].append(ts_recv)
        q["bid_px"].append(bid_px)
        q["bid_sz"].append(bid_sz)
        q["ask_px"].append(ask_px)
        q["ask_sz"].append(ask_sz)
        q["last"].append(last)
        q["seq"].append(seq)

    def book(self, msg: BookMessage) -> None:
        self.books.append(msg)

    def top(self, top: TopOfBook) -> None:
        self.tops.append(top)
