"""ccxt's unified structures, as written by the daemon's ``ccxt`` source.

Payload shape (one envelope per ccxt call result; ``env.ex`` is the ccxt exchange id, e.g.
``bybit``; ``kind`` is "msg" for ``watch_*`` and "rest" for ``fetch_*``)::

    {"method": "watch_trades"|"fetch_trades"|"watch_order_book"|"fetch_order_book"|
               "watch_ticker"|"fetch_ticker"|"watch_tickers"|"fetch_tickers"|
               "watch_bids_asks"|"fetch_bids_asks"|"watch_ohlcv"|"fetch_ohlcv"|...,
     "symbol": "BTC/USDT",            # the symbol asked for (None for *_tickers)
     "result": <the ccxt unified structure returned by that call>}

camelCase method names (``watchTrades``) are accepted too. Structures read:

    trade     {"id","timestamp"(ms),"symbol","side","price","amount",..}   -> trade
    orderbook {"bids":[[price,amount(,count)]..],"asks","timestamp","nonce","symbol"}
              -> a book SNAPSHOT every time (ccxt hands out its whole maintained book);
                 nonce -> final_id when it is an integer
    ticker    {"symbol","timestamp","bid","bidVolume","ask","askVolume","last",..} -> quote
    *_tickers a {symbol: ticker} dict or a list of tickers                -> quotes
    ohlcv, markets, status, time, currencies                               -> control

Numbers in ccxt structures are floats: each is written as the shortest decimal string that
round-trips to that float (``repr``), without exponent and without a trailing ".0"
(``common.float_to_decimal``). Strings and ints pass unchanged. A missing ``timestamp``
gives ts_event = ts_recv; side ``None`` gives "unknown"; a missing trade id gives "".

Symbols: unified ``BTC/USDT`` -> ``BTC-USDT``; contracts keep a type suffix so that spot
and derivatives of one exchange id never share a symbol: swap ``BTC/USDT:USDT`` ->
``BTC-USDT-SWAP``, future ``BTC/USDT:USDT-211225`` -> ``BTC-USDT-211225``, option
``BTC/USD:BTC-211225-60000-C`` -> ``BTC-USD-211225-60000-C``. The venue symbol column keeps
the ccxt unified symbol.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from fluxforge.events import BookMessage, EventSink, NormalizeError
from fluxforge.segments import EXCHANGE_RE, Envelope
from fluxforge.venues.common import (
    as_dict,
    as_list,
    atomic,
    ccxt_method_name,
    check_ts,
    checked_symbol,
    field,
    float_to_decimal,
    is_ccxt_payload,
    join_symbol,
    venue_symbol,
)

# payloads with ex == "ccxt" (a source that does not know the real id) land here too
EXCHANGES = ("ccxt",)


_TRADES = frozenset({"watch_trades", "fetch_trades", "watch_trades_for_symbols"})
_BOOKS = frozenset(
    {"watch_order_book", "fetch_order_book", "watch_order_book_for_symbols", "fetch_l2_order_book"}
)
_TICKER = frozenset({"watch_ticker", "fetch_ticker"})
_TICKERS = frozenset({"watch_tickers", "fetch_tickers", "watch_bids_asks", "fetch_bids_asks"})
_CONTROL = frozenset(
    {
        "watch_ohlcv",
        "fetch_ohlcv",
        "watch_ohlcv_for_symbols",
        "fetch_markets",
        "load_markets",
        "fetch_status",
        "fetch_time",
        "fetch_currencies",
        "fetch_trading_fees",
        "fetch_funding_rate",
        "fetch_funding_rates",
    }
)
_SIDES = {"buy": "buy", "sell": "sell", None: "unknown"}


@functools.lru_cache(maxsize=1024)
def is_ccxt_exchange(exchange: str) -> bool:
    """Whether the installed ccxt has an exchange of that id (looked up on disk: importing
    ccxt costs seconds)."""
    if not EXCHANGE_RE.fullmatch(exchange):
        return False
    spec = importlib.util.find_spec("ccxt")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(loc) / f"{exchange}.py").is_file() for loc in spec.submodule_search_locations)


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT``; ``BTC/USDT:USDT`` -> ``BTC-USDT-SWAP``;
    ``BTC/USDT:USDT-211225`` -> ``BTC-USDT-211225``."""
    pair, colon, contract = s.partition(":")
    base, slash, quote = pair.partition("/")
    if not slash or not base or not quote:
        raise NormalizeError(f"ccxt symbol {s[:40]!r}: expected BASE/QUOTE[:SETTLE[-..]]")
    parts = [base, quote]
    if colon:
        _settle, dash, rest = contract.partition("-")
        parts.extend(rest.split("-") if dash else ["SWAP"])
    return checked_symbol(join_symbol(*parts), s)


def _ts(value: Any, env: Envelope, what: str) -> int:
    if value is None:
        return env.ts
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise NormalizeError(f"{what}={value!r}: expected epoch milliseconds")
    return check_ts(value * 1_000_000, what)


def _symbol(obj: dict, fallback: Any, where: str) -> tuple[str, str]:
    raw = obj.get("symbol") or fallback
    raw = venue_symbol(raw, f"{where}.symbol")
    return venue_symbol_to_symbol(raw), raw


@atomic("ccxt")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One ccxt payload -> rows in ``sink``; returns "data" or "control"."""
    d = env.data
    if not is_ccxt_payload(d):
        raise NormalizeError("ccxt: payload is not {'method': 'watch_*|fetch_*', 'result': ...}")
    method = ccxt_method_name(d["method"])
    result = d["result"]
    asked = d.get("symbol")
    if method in _TRADES:
        return _trades(env, as_list(result, f"{method}.result"), asked, sink)
    if method in _BOOKS:
        if method == "watch_order_book_for_symbols" and "bids" not in result:
            books = as_dict(result, f"{method}.result").values()
        else:
            books = [result]
        msgs = [_book(env, method, as_dict(b, f"{method}.result"), asked) for b in books]
        for msg in msgs:
            sink.book(msg)
        return "data"
    if method in _TICKER:
        _quotes(env, [as_dict(result, f"{method}.result")], asked, sink)
        return "data"
    if method in _TICKERS:
        items = list(result.values()) if isinstance(result, dict) else as_list(result, method)
        _quotes(env, items, None, sink)
        return "data"
    if method in _CONTROL or method.startswith("un_watch"):
        return "control"
    raise NormalizeError(f"ccxt: unsupported method {method[:40]!r}")


def _trades(env: Envelope, result: list, asked: Any, sink: EventSink) -> str:
    rows = []
    for i, t in enumerate(result):
        w = f"trades[{i}]"
        t = as_dict(t, w)
        symbol, raw = _symbol(t, asked, w)
        side = t.get("side")
        if side not in _SIDES:
            raise NormalizeError(f"{w}.side={str(side)[:20]!r}: not buy/sell/None")
        trade_id = t.get("id")
        if trade_id is not None and type(trade_id) not in (str, int):
            raise NormalizeError(f"{w}.id={trade_id!r}: expected a string")
        price = float_to_decimal(field(t, "price", w), f"{w}.price")
        amount = float_to_decimal(field(t, "amount", w), f"{w}.amount")
        if price.strip("0.") == "" or amount.strip("0.") == "":
            raise NormalizeError(f"{w}: price and amount must be > 0")
        rows.append(
            (
                symbol,
                raw,
                _ts(t.get("timestamp"), env, f"{w}.timestamp"),
                "" if trade_id is None else str(trade_id),
                price,
                amount,
                _SIDES[side],
            )
        )
    for symbol, raw, ts_event, trade_id, px, sz, side in rows:
        sink.trade(env.ex, symbol, raw, ts_event, env.ts, trade_id, px, sz, side, env.seq)
    return "data"


def _levels(rows: Any, where: str) -> list[tuple[str, str]]:
    out = []
    for i, row in enumerate(as_list(rows, where)):
        if not isinstance(row, list) or len(row) < 2:
            raise NormalizeError(f"{where}[{i}]: expected [price, amount, ...], got {row!r:.60}")
        px = float_to_decimal(row[0], f"{where}[{i}].price")
        if px.strip("0.") == "":
            raise NormalizeError(f"{where}[{i}].price={px!r}: must be > 0")
        out.append((px, float_to_decimal(row[1], f"{where}[{i}].amount")))
    return out


def _book(env: Envelope, method: str, ob: dict, asked: Any) -> BookMessage:
    symbol, raw = _symbol(ob, asked, method)
    nonce = ob.get("nonce")
    return BookMessage(
        env.ex,
        symbol,
        raw,
        method,
        _ts(ob.get("timestamp"), env, f"{method}.timestamp"),
        env.ts,
        env.seq,
        True,
        _levels(field(ob, "bids", method), f"{method}.bids"),
        _levels(field(ob, "asks", method), f"{method}.asks"),
        final_id=nonce if type(nonce) is int and nonce >= 0 else -1,
        from_rest=env.kind == "rest",
    )


def _opt(value: Any, what: str) -> str | None:
    return None if value is None else float_to_decimal(value, what)


def _quotes(env: Envelope, items: list, asked: Any, sink: EventSink) -> None:
    rows = []
    for i, t in enumerate(items):
        w = f"ticker[{i}]"
        t = as_dict(t, w)
        symbol, raw = _symbol(t, asked, w)
        rows.append(
            (
                symbol,
                raw,
                _ts(t.get("timestamp"), env, f"{w}.timestamp"),
                _opt(t.get("bid"), f"{w}.bid"),
                _opt(t.get("bidVolume"), f"{w}.bidVolume"),
                _opt(t.get("ask"), f"{w}.ask"),
                _opt(t.get("askVolume"), f"{w}.askVolume"),
                _opt(t.get("last"), f"{w}.last"),
            )
        )
    for symbol, raw, ts_event, bp, bs, ap, az, last in rows:
        sink.quote(env.ex, symbol, raw, ts_event, env.ts, bp, bs, ap, az, last, env.seq)
