"""Ingestion sources. Each one writes into a ``SegmentWriter`` until the stop event is set.

Shared shape (``Source``): ``default_ex`` (envelope ``ex``), ``live`` (timestamps come from the
clock, so the writer also rotates on the clock's hour), ``prepare(writer)`` (after recovery,
before running) and ``async run(writer, stop)`` which returns when its input ends (burst mode)
or when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from fluxforge.config import Config, SourceConfig

if TYPE_CHECKING:
    from ingestion_daemon.writer import SegmentWriter


class Source(Protocol):
    name: str
    default_ex: str
    live: bool

    def prepare(self, writer: SegmentWriter) -> None: ...

    async def run(self, writer: SegmentWriter, stop: asyncio.Event) -> None: ...


class SourceConfigError(ValueError):
    """A source option is invalid; the message names source, key, value and what is allowed."""


def option_error(src: SourceConfig, key: str, value: object, allowed: str) -> SourceConfigError:
    return SourceConfigError(f"sources[{src.name}].{key} = {value!r}: {allowed}")


def build_source(src: SourceConfig, cfg: Config) -> Source:
    """The source object for one configured entry (the only switch on source type)."""
    if src.type == "synthetic":
        from ingestion_daemon.sources.synthetic import SyntheticSource

        return SyntheticSource(src, cfg)
    if src.type == "replay":
        from ingestion_daemon.sources.replay import ReplaySource

        return ReplaySource(src, cfg)
    if src.type == "coinbase":
        from ingestion_daemon.sources.coinbase import CoinbaseSource

        return CoinbaseSource(src, cfg)
    from ingestion_daemon.sources.ccxt_source import CcxtSource

    return CcxtSource(src, cfg)
