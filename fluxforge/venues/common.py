"""Wire-field checks shared by the venue normalizers: exact decimal strings, timestamps,
symbols, and the all-or-nothing wrapper around a module's ``normalize``.

Every check raises ``NormalizeError`` with a reason naming the field, so a quarantined line
says what was wrong with it.

Numbers: a price or size is passed on as the exact wire string after validation: plain
decimal notation (``[0-9]+(.[0-9]+)?``), finite, non-negative, below 1e26, and at most 12
decimals (the lake's decimal128(38, 12); ``fluxforge.wire.decimal`` holds the limits). Zeros
past the 12th decimal are venue padding (the same number): the text is kept verbatim (venue
checksums are computed over it) and the casts to the lake's type cut them; any other digit
there is refused, naming the value and the limit. JSON integers are accepted and written with
``str``; JSON floats are refused on native venues (the exact wire text is already lost) and
only converted on the ccxt path (see ``float_to_decimal``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import Envelope, raw_payload
from fluxforge.wire import shape
from fluxforge.wire.decimal import (
    DEC_RE,
    FAST_DEC_RE,
    MAX_DECIMALS,
    MAX_INT_DIGITS,
    fast_levels,
    to_scale,
)
from fluxforge.wire.times import TS_MAX_NS, TS_MIN_NS, days_from_civil

MAX_VALUE = Decimal(10) ** MAX_INT_DIGITS

_VENUE_SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,63}")
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?(Z|[+-]00:?00)?"
)

# asset renames applied to every base/quote (Kraken's legacy codes)
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}

# quote assets for venues that glue base and quote together (Binance, Bitget); the longest
# matching suffix wins, so BUSD beats USD and USDT beats USD
CONCAT_QUOTES = (
    "USDT",
    "USDC",
    "FDUSD",
    "BUSD",
    "TUSD",
    "USDP",
    "USDS",
    "USDE",
    "DAI",
    "PAX",
    "UST",
    "AEUR",
    "EURI",
    "USD",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "GBP",
    "TRY",
    "BRL",
    "AUD",
    "RUB",
    "UAH",
    "NGN",
    "ZAR",
    "IDRT",
    "BIDR",
    "BKRW",
    "PLN",
    "RON",
    "ARS",
    "JPY",
    "MXN",
    "COP",
    "CZK",
    "XRP",
    "TRX",
    "DOGE",
    "DOT",
    "VAI",
    "SOL",
)


def _bad_decimal(value: str, what: str) -> NormalizeError:
    text = value.strip().lower()
    if text.startswith("-"):
        why = "negative"
    elif text.lstrip("+") in ("nan", "inf", "infinity", "snan"):
        why = "not finite"
    elif DEC_RE.fullmatch(text) and len(text) - text.find(".") - 1 > MAX_DECIMALS:
        why = (
            f"{len(text) - text.find('.') - 1} decimals with a non-zero digit past the "
            f"{MAX_DECIMALS}th: the lake keeps {MAX_DECIMALS} decimals"
        )
    else:
        why = "not a plain decimal number"
    return NormalizeError(f"{what}={value[:64]!r}: {why}")


def dec(value: Any, what: str) -> str:
    """The exact decimal string for a price/size field, validated (see module doc)."""
    if type(value) is str and FAST_DEC_RE.fullmatch(value):
        return value  # <= MAX_INT_DIGITS integer digits and <= MAX_DECIMALS: within bounds
    return _dec_slow(value, what)


def _dec_slow(value: Any, what: str) -> str:
    if type(value) is str:
        text = value
    elif type(value) is int:
        if value < 0:
            raise NormalizeError(f"{what}={value!r}: negative")
        text = str(value)
    elif isinstance(value, float):
        raise NormalizeError(f"{what}={value!r}: JSON float, an exact decimal string is expected")
    else:
        raise NormalizeError(f"{what}={value!r}: expected a decimal string")
    if not DEC_RE.fullmatch(text):
        raise _bad_decimal(text, what)
    scaled = to_scale(text)
    if scaled is None:
        raise _bad_decimal(text, what)
    dot = scaled.find(".")
    int_len = len(scaled) if dot < 0 else dot
    if int_len > MAX_INT_DIGITS and Decimal(scaled) >= MAX_VALUE:
        # the lake's decimal holds at most MAX_INT_DIGITS integer digits: 10**that does not fit
        raise NormalizeError(
            f"{what}={text[:40]!r}: 1e{MAX_INT_DIGITS} or larger (the lake's limit)"
        )
    return text


def opt_dec(value: Any, what: str) -> str | None:
    """Like ``dec`` but None/"" (a venue's 'no value', e.g. an empty book side) give None."""
    if value is None or value == "":
        return None
    return dec(value, what)


def is_zero(text: str) -> bool:
    return not text.replace(".", "").strip("0")


def positive(value: Any, what: str) -> str:
    """A decimal that must be > 0 (trade prices and sizes, book prices)."""
    text = dec(value, what)
    if is_zero(text):
        raise NormalizeError(f"{what}={text!r}: must be > 0")
    return text


def float_to_decimal(value: Any, what: str) -> str:
    """ccxt's unified structures hold floats: the shortest decimal that round-trips to the
    same float (Python ``repr``), written without exponent ("1e-05" -> "0.00001") and without
    a trailing ".0". That is the number the venue sent whenever the venue's string had at
    most 15-17 significant digits, which covers every real price/size. A float whose shortest
    form has more than the lake's 12 decimals carries float arithmetic noise (ccxt's amount x
    contract size: 0.1 + 0.2 = 0.30000000000000004), not a venue's digits: it is rounded to 12
    decimals (half even; no venue ticks finer, docs/data-guide.md "Types"). Strings and ints
    pass through ``dec``, which refuses such digits."""
    if isinstance(value, bool) or value is None:
        raise NormalizeError(f"{what}={value!r}: expected a number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NormalizeError(f"{what}={value!r}: not finite")
        if value < 0:
            raise NormalizeError(f"{what}={value!r}: negative")
        text = repr(value)
        if "e" in text or "E" in text:
            try:
                text = format(Decimal(text), "f")
            except InvalidOperation:  # pragma: no cover - repr of a finite float always parses
                raise NormalizeError(f"{what}={value!r}: not a number") from None
        if text.endswith(".0"):
            text = text[:-2]
        if to_scale(text) is None:
            rounded = Decimal(text).quantize(Decimal(1).scaleb(-MAX_DECIMALS), ROUND_HALF_EVEN)
            text = format(rounded.normalize(), "f") if rounded else "0"
        return dec(text, what)
    return dec(value, what)


# ---------------------------------------------------------------- timestamps


def check_ts(ns: int, what: str) -> int:
    if not TS_MIN_NS <= ns <= TS_MAX_NS:
        raise NormalizeError(f"{what}={ns}: not a plausible time (ns since epoch, 2001..2100)")
    return ns


def ms_to_ns(value: Any, what: str) -> int:
    """Epoch milliseconds as a JSON int or a digit string -> ns."""
    if type(value) is int:
        ms = value
    elif type(value) is str and value.isdigit() and value.isascii():
        ms = int(value)
    else:
        raise NormalizeError(f"{what}={value!r}: expected epoch milliseconds")
    return check_ts(ms * 1_000_000, what)


def seconds_to_ns(value: Any, what: str) -> int:
    """Epoch seconds as a decimal string (Kraken "1618678133.136361") -> ns, exactly."""
    if type(value) is not str or not DEC_RE.fullmatch(value):
        raise NormalizeError(f"{what}={value!r}: expected epoch seconds as a decimal string")
    whole, _, frac = value.partition(".")
    return check_ts(int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]), what)


@functools.lru_cache(maxsize=4096)
def _epoch_day(year: int, month: int, day: int) -> int:
    return days_from_civil(year, month, day)


def iso_to_ns(value: Any, what: str, check: bool = True) -> int:
    """RFC 3339 UTC time ("2021-04-17T16:43:30.244075Z", up to ns digits) -> ns, exactly."""
    if type(value) is not str:
        raise NormalizeError(f"{what}={value!r}: expected an ISO-8601 UTC time string")
    m = _ISO_RE.fullmatch(value)
    if m is None:
        raise NormalizeError(f"{what}={value[:40]!r}: not an ISO-8601 UTC time")
    y, mo, d, hh, mi, ss, frac, _ = m.groups()
    month, day, hour, minute, sec = int(mo), int(d), int(hh), int(mi), int(ss)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 61):
        raise NormalizeError(f"{what}={value[:40]!r}: date/time field out of range")
    secs = _epoch_day(int(y), month, day) * 86400 + hour * 3600 + minute * 60 + sec
    ns = secs * 1_000_000_000 + (int((frac + "00000000")[:9]) if frac else 0)
    return check_ts(ns, what) if check else ns


# ---------------------------------------------------------------- fields and symbols


def field(obj: dict, key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise NormalizeError(f"{where}: missing field {key!r}") from None


def as_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise NormalizeError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def as_list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise NormalizeError(f"{where}: expected a JSON array, got {type(value).__name__}")
    return value


def venue_symbol(value: Any, what: str = "symbol") -> str:
    """The venue's own instrument name, checked to be a harmless identifier (it ends up in
    columns and, normalized, in partition paths: no '..', no NUL, no backslash...)."""
    if type(value) is not str or not _VENUE_SYMBOL_RE.fullmatch(value) or ".." in value:
        raise NormalizeError(f"{what}={str(value)[:40]!r}: not a valid instrument name")
    return value


def checked_symbol(symbol: str, venue: str) -> str:
    if not _SYMBOL_RE.fullmatch(symbol) or ".." in symbol:
        raise NormalizeError(f"symbol {venue[:40]!r}: cannot be normalized to BASE-QUOTE")
    return symbol


def asset(code: str) -> str:
    code = code.upper()
    return ASSET_ALIASES.get(code, code)


def join_symbol(*parts: str) -> str:
    """BASE-QUOTE[-...] with XBT->BTC applied to base and quote."""
    if len(parts) >= 2:
        parts = (asset(parts[0]), asset(parts[1]), *(p.upper() for p in parts[2:]))
    return "-".join(parts)


def split_concat(name: str) -> tuple[str, str] | None:
    """'SUSHIUSDT' -> ('SUSHI', 'USDT') by the longest known quote suffix; None if none fits."""
    upper = name.upper()
    best = None
    for quote in CONCAT_QUOTES:
        if (
            upper.endswith(quote)
            and len(upper) > len(quote)
            and (best is None or len(quote) > len(best))
        ):
            best = quote
    if best is None:
        return None
    return upper[: -len(best)], best


_DIGITS = re.compile(r"[0-9]+")


def timed_levels(rows: Any, where: str) -> tuple[list[tuple[str, str]], int]:
    """``levels`` of rows [price, size(, epoch seconds, ...)], and the latest level time in ns
    (0 when no row has one)."""
    out = levels(rows, where)
    latest = 0
    for i, row in enumerate(rows):
        if len(row) >= 3:
            latest = max(latest, seconds_to_ns(row[2], f"{where}[{i}].time"))
    return out, latest


def levels(rows: Any, where: str) -> list[tuple[str, str]]:
    """[[price, size, ...], ...] -> [(price, size)]: extra elements (order counts, times,
    Kraken's "r" flag) are dropped; price must be > 0, size >= 0 (0 removes the level)."""
    fast = fast_levels(rows)  # same list for input it surely accepts (~10x faster)
    if fast is not None:
        return fast
    if not isinstance(rows, list):
        raise NormalizeError(f"{where}: expected a list of levels, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 2:
            raise NormalizeError(f"{where}[{i}]: expected [price, size, ...], got {row!r:.60}")
        out.append((positive(row[0], f"{where}[{i}].price"), dec(row[1], f"{where}[{i}].size")))
    return out


# ---------------------------------------------------------------- ccxt payload detection

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
CCXT_METHOD_RE = re.compile(r"(watch|fetch|un_watch)_[a-z_]+")


def ccxt_method_name(method: str) -> str:
    """``watchTrades`` / ``watch_trades`` -> ``watch_trades``."""
    return method if method.islower() else _CAMEL.sub("_", method).lower()


def is_ccxt_payload(data: Any) -> bool:
    """True for the ``{"method","result"}`` payload written by the daemon's ccxt source."""
    if not isinstance(data, dict) or "result" not in data:
        return False
    method = data.get("method")
    return type(method) is str and CCXT_METHOD_RE.fullmatch(ccxt_method_name(method)) is not None


# ---------------------------------------------------------------- all-or-nothing wrapper


def atomic(venue: str) -> Callable:
    """Decorate a module's ``normalize``: a line either contributes all its rows or none.

    If the normalizer raises after emitting part of a multi-row message, the rows already in
    the sink are removed again, so a quarantined line never leaves half of itself in the
    tables. Unexpected Python errors from malformed shapes become NormalizeError too.
    (A ccxt-source payload with a native exchange id never reaches a native module:
    ``fluxforge.venues.normalize`` hands it to ``ccxt_unified``.)"""

    def wrap(fn: Callable[[Envelope, EventSink], str]) -> Callable[[Envelope, EventSink], str]:
        @functools.wraps(fn)
        def normalize(env: Envelope, sink: EventSink) -> str:
            n_trades = len(sink.trades["exchange"])
            n_quotes = len(sink.quotes["exchange"])
            n_books, n_tops = len(sink.books), len(sink.tops)
            try:
                return fn(env, sink)
            except Exception as exc:
                _rollback(sink, n_trades, n_quotes, n_books, n_tops)
                if isinstance(exc, NormalizeError):
                    raise
                if isinstance(exc, (KeyError, IndexError, TypeError, ValueError, AttributeError)):
                    raise NormalizeError(
                        f"{venue}: malformed message ({type(exc).__name__}: {exc!s:.80})"
                    ) from exc
                raise

        return normalize

    return wrap


def _rollback(sink: EventSink, n_trades: int, n_quotes: int, n_books: int, n_tops: int) -> None:
    for col in sink.trades.values():
        del col[n_trades:]
    for col in sink.quotes.values():
        del col[n_quotes:]
    del sink.books[n_books:]
    del sink.tops[n_tops:]


# ---------------------------------------------------------------- declared shapes, per line


def exact_payload(env: Envelope) -> Any:
    """The payload with every JSON number that has a fraction or exponent kept as its exact
    text (a str; integers stay int): for venues that send prices as JSON numbers, whose text
    the checksums are computed over. orjson's floats would lose it ("0.10" -> 0.1). Read from
    the envelope's line; without one, ``env.data`` (its floats are then refused by ``dec``)."""
    if env.raw is None:
        return env.data
    return json.loads(raw_payload(env.raw), parse_float=str)


def object_levels(rows: Any, where: str) -> list[tuple[str, str]]:
    """[{"price": p, "qty": q}, ...] (numbers as exact text, see ``exact_payload``) ->
    [(price, size)]: price > 0, size >= 0 (0 removes the level)."""
    out = []
    for i, row in enumerate(as_list(rows, where)):
        w = f"{where}[{i}]"
        row = as_dict(row, w)
        out.append(
            (positive(field(row, "price", w), f"{w}.price"), dec(field(row, "qty", w), f"{w}.qty"))
        )
    return out


def sided_levels(
    rows: Any, words: tuple[str, ...], sides: tuple[int, ...], where: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """[[side word, price, size, ...], ...] -> (bids, asks): the side of word k is sides[k]
    (``shape.SIDES``); extra elements are dropped; price > 0, size >= 0."""
    out: tuple[list[tuple[str, str]], list[tuple[str, str]]] = ([], [])
    for i, row in enumerate(as_list(rows, where)):
        w = f"{where}[{i}]"
        if not isinstance(row, list) or len(row) < 3:
            raise NormalizeError(f"{w}: expected [side, price, size], got {row!r:.60}")
        if type(row[0]) is not str or row[0] not in words:
            raise NormalizeError(f"{w}: side {str(row[0])[:20]!r} is not {'/'.join(words)}")
        level = (positive(row[1], f"{w}.price"), dec(row[2], f"{w}.size"))
        out[sides[words.index(row[0])]].append(level)
    return out


def iso_or_none(value: Any, what: str) -> int | None:
    """RFC 3339 UTC time -> ns; the epoch or earlier (a venue's "no time") -> None."""
    ns = iso_to_ns(value, what, check=False)
    return check_ts(ns, what) if ns > 0 else None


def _id_text(value: Any, what: str) -> str:
    if type(value) is int or type(value) is str:
        return str(value)
    raise NormalizeError(f"{what}={value!r:.40}: expected an integer id or a string")


def _int(value: Any, what: str, signed: bool = False) -> int:
    if type(value) is not int or (value < 0 and not signed):
        kind = "an integer" if signed else "a non-negative integer"
        raise NormalizeError(f"{what}={value!r:.40}: expected {kind}")
    return value


def _value(
    kind: int, value: Any, words: tuple[str, ...], what: str, sides: tuple[int, ...] = ()
) -> Any:
    """One declared value of an orjson-parsed object, by the rule of its kind (see
    fluxforge.wire.shape); raises NormalizeError with the reason."""
    if kind in (shape.V_INT, shape.V_INT_SPAN):
        return _int(value, what)
    if kind == shape.V_SINT:
        return _int(value, what, signed=True)
    if kind in (shape.V_MS, shape.V_MS_ANY):
        return ms_to_ns(value, what)
    if kind == shape.V_STR:
        if type(value) is not str:
            raise NormalizeError(f"{what}={value!r:.40}: expected a string")
        return value
    if kind == shape.V_TEXT:
        if type(value) is not str or not value:
            raise NormalizeError(f"{what}={value!r:.40}: expected a non-empty string")
        return value
    if kind == shape.V_DEC:
        return dec(value, what)
    if kind == shape.V_POS:
        return positive(value, what)
    if kind == shape.V_OPT_DEC:
        return opt_dec(value, what)
    if kind == shape.V_BOOL:
        if type(value) is not bool:
            raise NormalizeError(f"{what}={value!r:.40}: expected true/false")
        return value
    if kind == shape.V_ENUM:
        if type(value) is not str or value not in words:
            raise NormalizeError(f"{what}={str(value)[:20]!r}: not {'/'.join(words)}")
        return value
    if kind in (shape.V_BIDS, shape.V_ASKS):
        return levels(value, what)
    if kind == shape.V_NUM:
        return opt_dec(value, what)
    if kind == shape.V_NUM_POS:
        return positive(value, what)
    if kind in (shape.V_BIDS_OBJ, shape.V_ASKS_OBJ):
        return object_levels(value, what)
    if kind == shape.V_SECONDS:
        return seconds_to_ns(value, what)
    if kind == shape.V_ID:
        return _id_text(value, what)
    if kind == shape.V_ISO:
        return iso_to_ns(value, what)
    if kind == shape.V_ISO_OPT:
        return iso_or_none(value, what)
    if kind == shape.V_SIDED_LEVELS:
        return sided_levels(value, words, sides, what)
    if kind == shape.V_LIST:
        return as_list(value, what)
    if kind == shape.V_NESTED:
        if not isinstance(value, (dict, list)):
            raise NormalizeError(f"{what}={value!r:.40}: expected a JSON object or array")
        return value
    if kind in (shape.V_TIMED_BIDS, shape.V_TIMED_ASKS):
        return timed_levels(value, what)
    if kind == shape.V_DIGITS:
        if type(value) is not str or not _DIGITS.fullmatch(value):
            raise NormalizeError(f"{what}={value!r:.40}: expected a digit string")
        return int(value)
    return value  # V_SCALAR: not read


def missing_field(decl: shape.ObjectShape, obj: dict) -> str | None:
    """The first of the declaration's required keys or columns (a column: any of its keys)
    that the object lacks, or None when it has them all (the per-line twin of the scanner's
    required groups, ``fluxforge.demux.bytescan.has_required``)."""
    for name in decl.required:
        if name not in obj and not any(
            key in obj for key, col in zip(decl.names, decl.columns, strict=True) if col == name
        ):
            return name
    return None


def read_fields(decl: shape.ObjectShape, obj: Any, where: str) -> dict[str, Any]:
    """An orjson-parsed object (array for an array shape) read by its declaration: output
    column -> value, for the fields present (a column named by several keys: the first
    declared key present). Unknown keys are ignored here (the scanner is stricter and leaves
    such lines to this path); a missing required field or a bad value raises NormalizeError."""
    out: dict[str, Any] = {}
    if decl.array:
        items = as_list(obj, where)
        n_need = max((decl.names.index(r) + 1 for r in decl.required), default=0)
        if len(items) < n_need:
            names = ", ".join(decl.names)
            raise NormalizeError(f"{where}: expected [{names}], got {items!r:.60}")
        present = {name: items[k] for k, name in enumerate(decl.names) if k < len(items)}
    else:
        present = as_dict(obj, where)
        missing = missing_field(decl, present)
        if missing is not None:
            raise NormalizeError(f"{where}: missing field {missing!r}")
    fields = zip(decl.names, decl.kinds, decl.columns, decl.words, decl.sides, strict=True)
    for key, kind, col, words, sides in fields:
        # keys kept by no column are not read here (the scanner checks them; unknown to
        # this path, as before); a column's later alternative names are not read either
        if key not in present or not isinstance(col, str) or col in out:
            continue
        value = present[key]
        if value is None and key not in decl.required and col not in decl.required:
            continue  # null: as if absent (the column's next name, or no value)
        out[col] = _value(kind, value, words, f"{where}.{key}", sides)
    return out
