"""The highest segment counter and ``seq`` a source ever used, from everything that holds its
segments, so names and sequence numbers are never reused even when the daemon's state file is
lost or stale.

Looked at: every raw state (active, ready, processing, archive, failed) on the ingestion
storage, the spill directory and the ETL input storage (when it is another store), the warm and
cold tiers and the tiering manifest (fluxforge/tiering.py). A listing that fails raises: the
daemon refuses to start rather than guess.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fluxforge.config import Config
from fluxforge.segments import EnvelopeError, iter_lines, parse_envelope, parse_segment_name
from fluxforge.storage import Layout, Storage, open_storage

log = logging.getLogger(__name__)

RAW_STATES = ("active", "ready", "processing", "archive", "failed")
# the newest segments read for the last seq (the newest may hold no line of the source yet)
SEQ_SCAN_SEGMENTS = 8


class HighWaterError(OSError):
    """The counters cannot be known (a store or the manifest unreadable): do not start."""


@dataclass
class HighWater:
    counter: int = 0  # highest segment counter seen (0: none)
    seq: int = -1  # highest seq of the source seen (-1: none)
    places: list[str] = field(default_factory=list)


def _stores(cfg: Config, roots: list[Storage]) -> list[tuple[Storage, Layout]]:
    out = [(root, Layout.of(cfg.storage.ingestion)) for root in roots]
    seen = {root.uri("") for root in roots}
    etl = open_storage(cfg.storage.etl_input)
    if etl.uri("") not in seen:
        out.append((etl, Layout.of(cfg.storage.etl_input)))
    return out


def _tier_stores(cfg: Config) -> tuple[list[tuple[Storage, Layout]], list[str]]:
    """(warm/cold stores, names in the manifest) when tiering is usable with this config."""
    from fluxforge import tiering

    try:
        warm = tiering.resolve_warm_dir(cfg)
    except ValueError:  # an S3 lake without tiering.warm_dir: no tiers to look at
        return [], []
    stores: list[tuple[Storage, Layout]] = []
    inp = Layout.of(cfg.storage.etl_input)
    if warm.is_dir():
        from fluxforge.storage import LocalStorage

        stores.append((LocalStorage(warm), inp))
    if cfg.tiering.cold is not None:
        stores.append((open_storage(cfg.tiering.cold), Layout.of(cfg.tiering.cold)))
    names: list[str] = []
    path = Path(warm) / tiering.MANIFEST_NAME
    if path.exists():
        try:
            manifest = tiering.Manifest(path, readonly=True)
            try:
                names = [f"{src}/{name}" for src, name in manifest.rows()]
            finally:
                manifest.close()
        except Exception as exc:
            raise HighWaterError(
                f"tiering manifest {path} unreadable ({exc}): the daemon cannot know which "
                "segment names were used; repair or restore it, then start again"
            ) from None
    return stores, names


def high_water(cfg: Config, source: str, roots: list[Storage]) -> HighWater:
    """The highest counter over every place, and the highest seq of `source` in its newest
    segments."""
    hw = HighWater()
    found: list[tuple[int, Storage, str]] = []
    tier_stores, manifest_names = _tier_stores(cfg)
    for store, layout in _stores(cfg, roots) + tier_stores:
        for state in RAW_STATES:
            prefix = layout.raw_state_dir(state, source)
            try:
                keys = store.list(prefix, "segment_*")
            except OSError as exc:
                raise HighWaterError(
                    f"{source}: cannot list {store.uri(prefix)} ({exc}): the daemon cannot know "
                    "the segment names and seq numbers already used, so it does not start"
                ) from None
            for key in keys:
                with contextlib.suppress(ValueError):
                    found.append((parse_segment_name(key).counter, store, key))
    for entry in manifest_names:
        src, name = entry.split("/", 1)
        if src == source:
            with contextlib.suppress(ValueError):
                hw.counter = max(hw.counter, parse_segment_name(name).counter)
    if found:
        hw.counter = max(hw.counter, max(c for c, _, _ in found))
    found.sort(key=lambda item: item[0], reverse=True)
    for _, store, key in found[:SEQ_SCAN_SEGMENTS]:
        try:
            data = store.read_bytes(key)
        except OSError as exc:
            raise HighWaterError(
                f"{source}: cannot read {store.uri(key)} ({exc}) for its last seq: the daemon "
                "does not start"
            ) from None
        last = _last_seq(data, source)
        if last >= 0:
            hw.seq = max(hw.seq, last)
            hw.places.append(store.uri(key))
            break
    return hw


def _last_seq(data: bytes, source: str) -> int:
    best = -1
    for _, line in iter_lines(data):
        try:
            env = parse_envelope(line)
        except EnvelopeError:
            continue
        if env.src == source:
            best = max(best, env.seq)
    return best
