"""Venue normalizers: one module per exchange family, the same names in each.

Every module exposes ``EXCHANGES`` (the envelope ``ex`` ids it handles),
``normalize(env, sink) -> "data" | "control"`` (raises ``NormalizeError(reason)`` for a line
it cannot use) and ``venue_symbol_to_symbol(s) -> "BASE-QUOTE"``. See each module's docstring
for the wire shapes and the decisions taken, and docs/integrity.md for the book rules.

Dispatch: ``ctl`` envelopes are "control"; otherwise by ``env.ex``: a native module, or
``ccxt_unified`` for any other id the installed ccxt knows. The ccxt source keeps the real
ccxt id in ``env.ex`` and writes ``{"method": "watch_*"|"fetch_*", "symbol", "result"}``;
when that id has a native module (``kraken``...), ``normalize`` recognises the payload shape
and hands it to ``ccxt_unified`` instead.
"""

from __future__ import annotations

import functools
from types import ModuleType

from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues import binance, bitget, ccxt_unified, coinbase, kraken, okx
from fluxforge.venues.common import is_ccxt_payload

MODULES: tuple[ModuleType, ...] = (coinbase, binance, kraken, okx, bitget, ccxt_unified)
_BY_EXCHANGE: dict[str, ModuleType] = {ex: m for m in MODULES for ex in m.EXCHANGES}
EXCHANGES: tuple[str, ...] = tuple(sorted(_BY_EXCHANGE))


@functools.lru_cache(maxsize=256)
def normalizer_for(exchange: str) -> ModuleType:
    """The module for an exchange id: a native module, else ``ccxt_unified`` for any other
    exchange id the installed ccxt knows (only the ccxt source writes those). ``normalize``
    hands ccxt-shaped payloads of native ids to ``ccxt_unified``. KeyError lists the known ids."""
    module = _BY_EXCHANGE.get(exchange)
    if module is not None:
        return module
    if ccxt_unified.is_ccxt_exchange(exchange):
        return ccxt_unified
    raise KeyError(
        f"no normalizer for exchange {exchange!r}; known: {', '.join(EXCHANGES)}, "
        "or any ccxt exchange id (payloads of the ccxt source)"
    )


def normalize(env: Envelope, sink: EventSink) -> str:
    """One envelope -> rows in ``sink``; "data" or "control", or NormalizeError(reason)."""
    if env.kind == "ctl":
        return "control"
    try:
        module = normalizer_for(env.ex)
    except (KeyError, TypeError) as exc:
        raise NormalizeError(str(exc.args[0] if exc.args else exc)) from None
    if module is not ccxt_unified and is_ccxt_payload(env.data):
        return ccxt_unified.normalize(env, sink)
    return module.normalize(env, sink)


__all__ = ["EXCHANGES", "MODULES", "normalize", "normalizer_for"]
