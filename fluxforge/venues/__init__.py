"""Venue normalizers: one module per exchange family, the same names in each.

Every module exposes ``EXCHANGES`` (the envelope ``ex`` ids it handles),
``normalize(env, sink) -> "data" | "control"`` (raises ``NormalizeError(reason)`` for a line
it cannot use) and ``venue_symbol_to_symbol(s) -> "BASE-QUOTE"``. See CONTRACTS.md
"Venue normalizers" and each module's docstring for the wire shapes and the decisions taken.

Dispatch: ``ctl`` envelopes are "control"; a payload shaped like the daemon's ccxt source
output (``{"method": "watch_*"|"fetch_*", "result": ...}``) goes to ``ccxt_unified`` whatever
the exchange id (the ccxt source keeps the real ccxt id in ``env.ex``); everything else goes
by ``env.ex``.
"""

from __future__ import annotations

from types import ModuleType

from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues import binance, bitget, ccxt_unified, coinbase, kraken, okx

MODULES: tuple[ModuleType, ...] = (coinbase, binance, kraken, okx, bitget, ccxt_unified)
_BY_EXCHANGE: dict[str, ModuleType] = {ex: m for m in MODULES for ex in m.EXCHANGES}
EXCHANGES: tuple[str, ...] = tuple(sorted(_BY_EXCHANGE))


def normalizer_for(exchange: str, data: object = None) -> ModuleType:
    """The module for an exchange id; with ``data``, a ccxt-shaped payload picks
    ``ccxt_unified`` for any id. Raises KeyError listing the known ids."""
    if data is not None and ccxt_unified.is_ccxt_payload(data):
        return ccxt_unified
    try:
        return _BY_EXCHANGE[exchange]
    except KeyError:
        raise KeyError(
            f"no normalizer for exchange {exchange!r}; known: {', '.join(EXCHANGES)} "
            "(payloads of the ccxt source are handled for any exchange id)"
        ) from None


def normalize(env: Envelope, sink: EventSink) -> str:
    """One envelope -> rows in ``sink``; "data" or "control", or NormalizeError(reason)."""
    if env.kind == "ctl":
        return "control"
    if ccxt_unified.is_ccxt_payload(env.data):
        return ccxt_unified.normalize(env, sink)
    module = _BY_EXCHANGE.get(env.ex)
    if module is None:
        raise NormalizeError(
            f"no normalizer for exchange {str(env.ex)[:40]!r} (known: {', '.join(EXCHANGES)})"
        )
    return module.normalize(env, sink)


__all__ = ["EXCHANGES", "MODULES", "normalize", "normalizer_for"]
