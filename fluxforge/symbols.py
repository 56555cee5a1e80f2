"""What a user may type for a symbol and a time range, turned into what the lake holds.

One spelling rule for every command (docs/data-guide.md, "Symbols and ranges"): the lake names
instruments ``BASE-QUOTE[-SUFFIX]`` in upper case; ``BTC/USDT``, ``btc-usdt``, ``BTC_USDT``
and ccxt's ``BTC/USDT:USDT`` (a perpetual swap -> ``BTC-USDT-SWAP``) are all accepted.

One range rule: ``--start`` is inclusive, ``--end`` is exclusive (``[start, end)``), so
``--start 2024-03-01 --end 2024-03-02`` is exactly one UTC day, for query and history alike.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[/_\s]+")
_LAKE_SYMBOL = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)+$")


class SymbolError(ValueError):
    """A symbol cannot be read as BASE-QUOTE; the message shows the accepted spellings."""


def lake_symbol(text: str) -> str:
    """The lake's spelling of `text`: ``BTC/USDT`` -> ``BTC-USDT``, ``BTC/USDT:USDT`` ->
    ``BTC-USDT-SWAP``, ``BTC/USDT:USDT-211225`` -> ``BTC-USDT-211225``."""
    raw = text.strip()
    if ":" in raw:
        from fluxforge.events import NormalizeError
        from fluxforge.venues.ccxt_unified import venue_symbol_to_symbol

        try:
            return venue_symbol_to_symbol(raw.upper())
        except NormalizeError as exc:
            raise SymbolError(f"symbol {text!r}: {exc}") from None
    out = _SEPARATORS.sub("-", raw.upper()).strip("-")
    if not _LAKE_SYMBOL.match(out):
        raise SymbolError(
            f"symbol {text!r}: expected BASE-QUOTE or BASE/QUOTE (e.g. BTC-USDT or BTC/USDT)"
        )
    return out


def ccxt_symbol(text: str) -> str:
    """The ccxt spelling (``BASE/QUOTE[:SETTLE]``) of a symbol typed either way: what the
    exchanges' REST APIs are asked for by ``fluxforge history``."""
    raw = text.strip()
    if "/" in raw:
        return raw.upper()
    parts = lake_symbol(raw).split("-")
    base, quote, rest = parts[0], parts[1], parts[2:]
    if rest == ["SWAP"]:
        return f"{base}/{quote}:{quote}"
    if rest:
        return f"{base}/{quote}:{quote}-{'-'.join(rest)}"
    return f"{base}/{quote}"


def end_inclusive(end_ns: int) -> int:
    """The last nanosecond inside ``[start, end)``: readers that take an inclusive bound get
    ``end - 1``."""
    return end_ns - 1
