"""``BookEngine``: one (exchange, symbol) order book fed batch by batch, with integrity checks,
epochs, snapshot injection and a checkpointable state (see docs/integrity.md).

Rules, all applied inside the numba kernel (``kernel.apply_kernel``):

* an exchange snapshot (``is_snapshot``; a REST depth snapshot for Binance) replaces the book
  and starts a new ``book_epoch`` (a rebuild);
* while the book is invalid (before the first snapshot, after a gap), updates are dropped and
  counted in ``dropped_presync``; they produce no rows. Binance chains are the exception (see
  "Pre-snapshot buffer" below);
* Binance chains: after a REST snapshot with ``final_id = lastUpdateId``, futures drop
  ``u < lastUpdateId`` and bridge on ``U <= lastUpdateId <= u``, then need ``pu == previous u``;
  spot drops ``u <= lastUpdateId``, bridges on ``U <= lastUpdateId + 1 <= u``, then needs
  ``U == previous u + 1``;
* Kraken/OKX/Bitget checksums are verified after the message (Kraken after truncating to the
  venue depth); a mismatching message is not applied;
* a chain break or checksum mismatch ends the epoch (gap row) and the book stays invalid
  until the next exchange snapshot; ``reconnect()`` does the same with cause ``reconnect``;
* after each applied message one snapshot row may be injected: ``sod`` on the first applied
  message of a UTC date (of ``ts_recv``), else ``resync``/``reconnect`` right after a rebuild,
  else ``periodic`` when ``ts_event // snapshot_interval`` moved past the last snapshot's.

Pre-snapshot buffer (Binance's documented procedure: open the stream, buffer the events, get
the snapshot, then drop / bridge / chain). While a Binance-chained book is invalid, its depth
updates are kept in receive order instead of dropped: every update since the book became
invalid, the update that revealed a chain break included (it may be the one that bridges the
next snapshot). When a chained (REST) snapshot arrives, the book is replaced and the buffer is
replayed right after it through the normal drop / bridge / chain rules, so a REST response that
arrives after its bridging event no longer breaks the chain. The buffer is bounded by
``presync_buffer`` messages and ``presync_window_ns`` of receive time (an entry received more
than that before the update being buffered or the arriving snapshot goes); the oldest entries
are evicted and counted (``buffer_evicted``, also in ``dropped_presync``). An eviction can
never leave a silently wrong book: if it took the bridging event, the replay fails the bridge
rule and writes a ``chain_break`` gap row whose detail names the evictions. ``reconnect()``
empties the buffer (those updates precede a hole in the stream). The buffer is part of
``state()``, so it survives batches and checkpoints.

Rows of replayed updates: a replayed update only becomes part of the book when the snapshot
arrives, so its ``book_deltas`` rows carry the snapshot's ``ts_recv`` and ``seq`` (they are
written right after the snapshot's own rows) and keep their own ``ts_event`` and
``update_id``. The rebuild's snapshot row (``resync``/``reconnect``/``sod``) is injected once,
after the replay: it shows the book after the snapshot and the replayed updates, with the
snapshot's ``ts_recv``/``seq`` and the last replayed update's ``ts_event``/``update_id``. So a
reader starting from the nearest snapshot row <= T and applying deltas with a greater ``seq``
(``fluxforge.query.Reader.book_at``) never needs, and never double-applies, a replayed row, and
the rows sort consistently by (``ts_recv``, ``seq``) with the snapshot row and stay in its date
partition. Gap rows found during a replay carry the snapshot's ``ts_recv`` as ``ts_to``.

Book drift: a venue snapshot that arrives while the epoch is still valid is first compared
level by level with the replayed book (``fluxforge.book.drift``), inside the kernel, right
before the snapshot replaces the book; a difference writes a ``book_drift`` row and a
gap-ledger row (cause ``book_drift``, the epoch the snapshot ends).

``BookOutput.stats`` counts what THIS call did (sum them across calls).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal

import numpy as np
import orjson
import pyarrow as pa

from fluxforge.book import drift as D
from fluxforge.book import kernel as K
from fluxforge.book.batch import BookBatch, BookInputError
from fluxforge.events import BookMessage
from fluxforge.tables import (
    BOOK_DELTAS,
    BOOK_DRIFT,
    BOOK_SNAPSHOTS,
    DECIMAL,
    GAP_LEDGER,
    per_schema,
)
from fluxforge.wire.decimal import SCALE_LIMITS, to_decimal

log = logging.getLogger(__name__)

_MAGIC = b"FFBOOK1\n"
_TABLE = K.crc_table()
_INITIAL_CAP = 64
# Pre-snapshot buffer limits. Binance's REST depth snapshot normally answers within a second or
# two of the request; a 100 ms diff stream gives ~10 updates/s per symbol, so 60 s is ~600
# updates. 5000 messages bounds the memory when updates come faster than that.
PRESYNC_BUFFER = 5_000
PRESYNC_WINDOW_NS = 60_000_000_000


@dataclass
class BookStats:
    book_updates: int = 0  # messages applied (snapshots + updates)
    checksums_verified: int = 0  # venue checksums that matched
    checksum_mismatches: int = 0
    chain_links_verified: int = 0  # Binance pu/U links that held (+ the snapshot bridge)
    chain_breaks: int = 0
    snapshots: int = 0  # injected snapshot rows written (sod/periodic/resync/...)
    gaps: int = 0  # gap-ledger rows
    dropped_presync: int = 0  # messages dropped while waiting for a (REST) snapshot
    crossed: int = 0  # applied messages after which best bid >= best ask (counted only)
    bridges: int = 0  # Binance snapshot bridges (also counted in chain_links_verified)
    buffered: int = 0  # Binance updates held while waiting for a REST snapshot
    replayed: int = 0  # buffered updates applied after the snapshot (also in book_updates)
    buffer_evicted: int = 0  # buffered updates evicted by the limits (also in dropped_presync)
    stale_rest_snapshots: int = 0  # REST snapshots skipped: the valid chain was already past them
    drift_checks: int = 0  # venue snapshots compared with the book of a valid epoch
    drifts: int = 0  # of those, the ones that differed (book_drift + gap-ledger rows)

    def add(self, other: BookStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_STAT_ORDER = (
    (K.T_UPDATES, "book_updates"),
    (K.T_VERIFIED, "checksums_verified"),
    (K.T_MISMATCH, "checksum_mismatches"),
    (K.T_LINKS, "chain_links_verified"),
    (K.T_BREAKS, "chain_breaks"),
    (K.T_SNAPSHOTS, "snapshots"),
    (K.T_GAPS, "gaps"),
    (K.T_DROPPED, "dropped_presync"),
    (K.T_CROSSED, "crossed"),
    (K.T_BRIDGES, "bridges"),
    (K.T_BUFFERED, "buffered"),
    (K.T_REPLAYED, "replayed"),
    (K.T_EVICTED, "buffer_evicted"),
    (K.T_STALE, "stale_rest_snapshots"),
    (K.T_DRIFT_CHECKS, "drift_checks"),
    (K.T_DRIFTS, "drifts"),
)


Top = tuple[int, int, str, str, str, str]


@dataclass
class BookOutput:
    deltas: pa.Table  # fluxforge.tables.BOOK_DELTAS columns
    snapshots: pa.Table  # fluxforge.tables.BOOK_SNAPSHOTS columns
    gaps: pa.Table  # fluxforge.tables.GAP_LEDGER columns
    stats: BookStats
    # per applied message: (ts_recv, final_id, bid_px, bid_sz, ask_px, ask_sz); "" = empty
    # side. Built on first access of ``.tops`` (Python tuples cost more than the book itself).
    lazy_tops: Callable[[], list[Top]] | None = field(default=None, repr=False)
    drift: pa.Table = field(default_factory=lambda: _empty(BOOK_DRIFT))  # BOOK_DRIFT columns

    @property
    def tops(self) -> list[Top]:
        if self._tops is None:
            self._tops = self.lazy_tops() if self.lazy_tops is not None else []
        return self._tops

    def __post_init__(self) -> None:
        self._tops: list[Top] | None = None


def _concat_outputs(outs: list[BookOutput]) -> BookOutput:
    """One output for consecutive applies of the same engine."""
    if len(outs) == 1:
        return outs[0]
    stats = BookStats()
    for o in outs:
        stats.add(o.stats)
    lazy = [o.lazy_tops for o in outs]
    return BookOutput(
        deltas=pa.concat_tables([o.deltas for o in outs]),
        snapshots=pa.concat_tables([o.snapshots for o in outs]),
        gaps=pa.concat_tables([o.gaps for o in outs]),
        stats=stats,
        drift=pa.concat_tables([o.drift for o in outs]),
        lazy_tops=None
        if all(f is None for f in lazy)
        else lambda: [t for f in lazy if f is not None for t in f()],
    )


class BookStateError(ValueError):
    """A checkpoint cannot be loaded; the text says why."""


_NO_WORDS = np.zeros(0, np.int64)
_NO_ARENA = (np.zeros(0, np.uint8), np.zeros(1, np.int64))


def _decimal_column(ids: np.ndarray, arenas: tuple) -> pa.Array:
    """Pooled wire strings -> the lake's ``DECIMAL``, parsed in numba; Arrow's cast for the
    forms the fast parser does not take. A value the lake cannot hold raises BookInputError
    naming it and the limit."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    buf, ok = K.decimals(ids, *arenas, *SCALE_LIMITS)
    if ok:
        return pa.Array.from_buffers(DECIMAL, len(ids), [None, pa.py_buffer(buf)], null_count=0)
    data, offs = K.gather(ids, *arenas)
    strings = pa.LargeStringArray.from_buffers(
        len(ids), pa.py_buffer(offs), pa.py_buffer(data), null_count=0
    )
    try:
        return to_decimal(strings)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BookInputError(_refusal(strings, exc)) from None


def _refusal(strings: pa.Array, exc: Exception) -> str:
    """The first of `strings` the lake's decimal cannot hold, named with the limit."""
    limit = (
        f"decimal({DECIMAL.precision}, {DECIMAL.scale}): at most "
        f"{DECIMAL.precision - DECIMAL.scale} integer digits and {DECIMAL.scale} decimals "
        f"(zeros past the {DECIMAL.scale}th decimal are accepted)"
    )
    for value in strings.to_pylist():
        try:
            to_decimal(pa.array([value], pa.large_string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as one:
            return f"book level price/size {value[:64]!r} does not fit {limit}: {one}"
    return f"book level price/size does not fit {limit}: {exc}"  # pragma: no cover


def _batch_decimals(batch: BookBatch) -> pa.Array:
    """Every level's price then size as decimal128, computed BEFORE the kernel runs so that a
    value the lake cannot hold raises (BookInputError) with the engine state untouched. The
    words the scan already read (``BookBatch.words``) are taken as they are."""
    if batch.words is not None:
        words = pa.py_buffer(batch.words)
        return pa.Array.from_buffers(DECIMAL, 2 * batch.n_levels, [None, words], null_count=0)
    return _decimal_column(
        np.arange(2 * batch.n_levels), (0, *_NO_ARENA, batch.arena, batch.arena_offsets)
    )


# schema -> its empty table (``tables.per_schema``: asked several times per apply)
_EMPTY: dict[int, tuple[pa.Schema, pa.Table]] = {}
# a batch with more levels than this is applied in slices of whole messages, each building
# its decimals and rows (bounded memory on a 100 MB segment; the same rows as one call)
BATCH_LEVELS = 1 << 20


def _empty(schema: pa.Schema) -> pa.Table:
    """The empty table of `schema`, built once: Arrow tables are immutable, so every output
    without rows shares it."""
    return per_schema(_EMPTY, schema, schema.empty_table)


def _strings_of(codes: np.ndarray, values: list[str]) -> pa.Array:
    """``values[codes]`` as a string array. Built from bytes when every value has the same
    length (bid/ask, one venue symbol: the usual case of a delta column of a million rows),
    else through a dictionary."""
    encoded = [v.encode() for v in values]
    width = len(encoded[0]) if encoded else 0
    if not width or any(len(e) != width for e in encoded) or len(codes) * width >= 1 << 31:
        return pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32)), pa.array(values, pa.string())
        ).cast(pa.string())
    n = len(codes)
    if len(encoded) == 1:  # one value (every code 0): the bytes repeated, by doubling copies
        data = encoded[0] * n
    else:  # a byte loop in numba (numpy's take of fixed-width items: 3-7x slower)
        data, ok = K.fixed_width_strings(
            np.ascontiguousarray(codes),
            np.frombuffer(b"".join(encoded), np.uint8).reshape(len(encoded), width),
        )
        if not ok:
            raise IndexError(f"string code out of range for {len(values)} values")
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), null_count=0)


def _delta_rows(
    batch: BookBatch, order: np.ndarray, clock: np.ndarray, epoch: np.ndarray, dec: pa.Array
) -> pa.Table:
    """Rows of the applied messages `order` of `batch` in application order; receive time and
    seq from each message's clock (``clock[m]``: itself, or the snapshot a replayed update
    followed), epoch ``epoch[m]``; `dec`: the decimals of every level's price, then size."""
    idx, ts_event, ts_recv, update_id, snap, ep, seq, side, vsym = K.delta_columns(
        order,
        clock,
        epoch,
        batch.level_offsets,
        batch.side,
        batch.ts_event,
        batch.ts_recv,
        batch.final_id,
        batch.flags,
        batch.seq,
        batch.venue_symbol,
    )
    return _table(
        BOOK_DELTAS,
        {
            "ts_event": pa.array(ts_event),
            "ts_recv": pa.array(ts_recv),
            "venue_symbol": _strings_of(vsym, batch.venue_symbols),
            "side": _strings_of(side, ["bid", "ask"]),
            "price": _pick(dec, idx),
            "size": _pick(dec, idx + batch.n_levels),
            "update_id": pa.array(update_id),
            "is_snapshot": pa.array(snap),
            "book_epoch": pa.array(ep),
            "seq": pa.array(seq),
        },
    )


@dataclass
class _SnapshotRows:
    """Injected snapshot rows as columns; ``lists``: (counts per row, decimal values) of
    bid_px, bid_sz, ask_px, ask_sz."""

    ts_event: np.ndarray
    ts_recv: np.ndarray
    venue_symbol: list[str]
    depth: np.ndarray
    lists: list[tuple[np.ndarray, pa.Array]]
    reason: np.ndarray
    book_epoch: np.ndarray
    update_id: np.ndarray
    seq: np.ndarray


def _snapshot_table(rows: _SnapshotRows | None) -> pa.Table:
    """The book_snapshots table of `rows` (None: no rows)."""
    if rows is None:
        return _empty(BOOK_SNAPSHOTS)
    lists = []
    for counts, values in rows.lists:
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        lists.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    reasons = pa.DictionaryArray.from_arrays(
        pa.array(rows.reason.astype(np.int32)), pa.array(K.REASONS, pa.string())
    ).cast(pa.string())
    return _table(
        BOOK_SNAPSHOTS,
        {
            "ts_event": pa.array(rows.ts_event),
            "ts_recv": pa.array(rows.ts_recv),
            "venue_symbol": pa.array(rows.venue_symbol, pa.string()),
            "depth": pa.array(rows.depth),
            "bid_px": lists[0],
            "bid_sz": lists[1],
            "ask_px": lists[2],
            "ask_sz": lists[3],
            "reason": reasons,
            "book_epoch": pa.array(rows.book_epoch),
            "update_id": pa.array(rows.update_id),
            "seq": pa.array(rows.seq),
        },
    )


def _pick(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """``values.take(idx)``; a slice (no copy) when `idx` is one ascending run, as it is
    whenever every level of a batch was applied in order."""
    n = len(idx)
    if n and int(idx[-1]) - int(idx[0]) == n - 1 and bool(np.all(np.diff(idx) == 1)):
        return values.slice(int(idx[0]), n)
    return values.take(idx)


def _table(schema: pa.Schema, columns: dict[str, pa.Array]) -> pa.Table:
    """Columns in schema order; a column the engine does not know (added to the schema later)
    is all null rather than a crash."""
    n = len(next(iter(columns.values())))
    arrays = [
        pa.nulls(n, f.type)
        if f.name not in columns
        else columns[f.name]
        if columns[f.name].type == f.type
        else columns[f.name].cast(f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _kernel_gaps(
    batch: BookBatch, meta: np.ndarray, segment: str, drifts: list[D.Drift]
) -> pa.Table:
    """The gap-ledger rows of the kernel's gap events `meta` (``kernel._gap_row`` columns:
    message, cause, epoch, ts_from, expected, got, ts_to, evicted), in order."""
    m = meta[:, 0]
    cause = meta[:, 1]
    n = len(meta)
    details = [
        _gap_detail(c, final, expected, got, evicted, drifts)
        for c, final, expected, got, evicted in zip(
            cause.tolist(),
            batch.final_id[m].tolist(),
            meta[:, 4].tolist(),
            meta[:, 5].tolist(),
            meta[:, 7].tolist(),
            strict=True,
        )
    ]
    times = GAP_LEDGER.field("ts_from").type
    arrays = [
        pa.array(batch.channels, pa.string()).take(batch.channel[m]),
        pa.array(meta[:, 3], times),
        pa.array(meta[:, 6], times),
        pa.array(K.CAUSES, pa.string()).take(cause),
        pa.array(meta[:, 2], pa.int32()),
        pa.array(details, pa.string()),
        pa.repeat(pa.scalar(segment, pa.string()), n),
    ]
    return pa.Table.from_arrays(arrays, schema=GAP_LEDGER)


def _gap_detail(
    cause: int, final_id: int, expected: int, got: int, evicted: int, drifts: list[D.Drift]
) -> str:
    """The gap ledger's detail of one kernel gap event (for a drift, `expected` is the index
    of its drift row)."""
    if cause == K.G_DRIFT:
        return drifts[expected].detail()
    if cause == K.G_CHAIN_BREAK:
        detail = f"update id chain broken at final id {final_id}: expected {expected}, got {got}"
        if evicted:
            detail += (
                f" ({evicted} updates buffered while waiting for the snapshot were evicted by "
                "the buffer limits)"
            )
        return detail
    return f"checksum mismatch: venue {expected}, book {got}"


class BookEngine:
    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        depth: int = 50,
        snapshot_interval_ns: int = 60_000_000_000,
        segment: str = "",
        state: bytes | None = None,
        record_tops: bool = True,
        presync_buffer: int = PRESYNC_BUFFER,
        presync_window_ns: int = PRESYNC_WINDOW_NS,
    ) -> None:
        """``presync_buffer``: at most this many Binance updates are kept while the book waits
        for its REST snapshot (0 = drop them, the behaviour before buffering);
        ``presync_window_ns``: and none received more than this before the newest update or
        the snapshot (0 = no age limit). Both must be the same for every engine of a
        (exchange, symbol), like ``depth``: they decide which rows are written."""
        if depth < 1:
            raise ValueError(f"book depth must be >= 1, got {depth}")
        if snapshot_interval_ns < 1:
            raise ValueError(f"snapshot_interval_ns must be >= 1, got {snapshot_interval_ns}")
        if presync_buffer < 0:
            raise ValueError(f"presync_buffer must be >= 0, got {presync_buffer}")
        if presync_window_ns < 0:
            raise ValueError(f"presync_window_ns must be >= 0, got {presync_window_ns}")
        self.presync_buffer = presync_buffer
        self.presync_window_ns = presync_window_ns
        self.exchange = exchange
        self.symbol = symbol
        self.depth = depth
        self.snapshot_interval_ns = snapshot_interval_ns
        self.segment = segment
        self.record_tops = record_tops
        self._st = K.new_state()
        self._key = np.zeros((2, _INITIAL_CAP), dtype=np.float64)
        self._pid = np.zeros((2, _INITIAL_CAP), dtype=np.int64)
        for s in range(2):
            self._st[K.S_LO0 + 2 * s] = self._st[K.S_HI0 + 2 * s] = _INITIAL_CAP // 2
        self._arena = np.zeros(0, dtype=np.uint8)
        self._arena_off = np.zeros(1, dtype=np.int64)
        self._channel = "book"
        self._pending_gaps: list[dict] = []
        # Binance updates waiting for a REST snapshot (receive order), and the count of those
        # a reconnect discarded (reported with the next apply())
        self._buffer: BookBatch | None = None
        self._pending_dropped = 0
        self._integrity = "none"  # checksum | chain | none, learned from the messages
        if state is not None:
            self._load(state)

    # ------------------------------------------------------------------ public API
    @property
    def book_epoch(self) -> int:
        return int(self._st[K.S_EPOCH])

    @property
    def valid(self) -> bool:
        return bool(self._st[K.S_VALID])

    @property
    def buffered(self) -> int:
        """Updates held in the pre-snapshot buffer right now."""
        return 0 if self._buffer is None else len(self._buffer)

    def levels(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The whole current book as (price, size) wire strings: bids best first, asks best
        first (after a gap: the book as it was when the epoch ended)."""
        nb = int(self._st[K.S_HI0] - self._st[K.S_LO0])
        offs = self._arena_off.tolist()
        data = self._arena.tobytes()
        # the arena is compact and canonical between calls: bids then asks, price then size
        strs = [data[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]
        pairs = list(zip(strs[0::2], strs[1::2], strict=True))
        return pairs[:nb], pairs[nb:]

    def apply(self, messages: Sequence[BookMessage], segment: str = "") -> BookOutput:
        """Messages of ONE (exchange, symbol) in receive order."""
        for i, msg in enumerate(messages):
            if msg.exchange != self.exchange or msg.symbol != self.symbol:
                raise ValueError(
                    f"book message {i} is for {msg.exchange} {msg.symbol}, this engine is "
                    f"{self.exchange} {self.symbol}"
                )
        return self.apply_batch(BookBatch.from_messages(messages), segment)

    def apply_batch(
        self,
        batch: BookBatch,
        segment: str = "",
        *,
        tables: bool = True,
        spent: Callable[[int, int], None] | None = None,
    ) -> BookOutput:
        """Apply a columnar batch. ``tables=False`` skips building the deltas/snapshots tables
        and tops (the benchmark's hot path); gaps, stats and state are the same either way.

        A batch of more than ``BATCH_LEVELS`` levels is applied in slices, each a copy of its
        levels' strings and decimals; ``spent(l0, l1)`` is then called once each slice's
        levels [l0, l1) are applied: nothing the engine keeps or returns reads them again, so
        the caller may hand the batch's columns there back (``FastBook.release``). Not with
        ``record_tops`` (an output's tops read its slice when asked)."""
        segment = segment or self.segment
        if spent is not None and self.record_tops:
            raise ValueError("apply_batch: spent levels with record_tops (tops read them later)")
        self._learn_integrity(batch)
        if batch.n_levels <= BATCH_LEVELS:
            return self._apply(batch, segment, tables)
        offsets = batch.level_offsets
        cuts = [0]
        while cuts[-1] < len(batch):
            lo = cuts[-1]
            hi = int(np.searchsorted(offsets, offsets[lo] + BATCH_LEVELS, side="right")) - 1
            cuts.append(min(max(hi, lo + 1), len(batch)))
        outs = []
        for lo, hi in itertools.pairwise(cuts):
            outs.append(self._apply(batch.slice(lo, hi), segment, tables))
            if spent is not None:
                spent(int(offsets[lo]), int(offsets[hi]))
        return _concat_outputs(outs)

    def _learn_integrity(self, batch: BookBatch) -> None:
        """How the venue verifies this book, from its messages (a Kraken snapshot carries no
        checksum, its updates do): kept for the drift rows of later batches."""
        if len(batch) and np.any(batch.checksum_kind != K.CK_NONE):
            self._integrity = "checksum"
        elif len(batch) and np.any(batch.chain != K.CH_NONE) and self._integrity == "none":
            self._integrity = "chain"

    def _apply(self, batch: BookBatch, segment: str, tables: bool) -> BookOutput:
        m0 = 0
        if self._buffer is not None and len(batch):
            # the buffered updates go in front, as already received: the kernel starts at m0
            m0 = len(self._buffer)
            batch = BookBatch.concat([self._buffer, batch])
        n = len(batch)
        order = np.empty(n, dtype=np.int64)
        clock = np.empty(n, dtype=np.int64)
        epoch = np.empty(n, dtype=np.int32)
        tops = np.empty((n, 4), dtype=np.int64)
        counters = np.zeros(K.N_STATS, dtype=np.int64)
        n0 = len(self._arena_off) - 1
        # a value the lake cannot hold raises here, before the kernel touches the state
        dec = _batch_decimals(batch) if tables else None
        words0, words1 = _NO_WORDS, _NO_WORDS
        if dec is not None:
            # the drift check and the snapshot rows read decimals: parsed once, here
            words1 = np.frombuffer(dec.buffers()[1], np.int64)[: 4 * batch.n_levels]
            words0, ok = K.decimals(
                np.arange(n0), n0, self._arena, self._arena_off, *_NO_ARENA, *SCALE_LIMITS
            )
            if not ok:
                words0 = _NO_WORDS
        words = (words0, words1) if len(words0) == 2 * n0 and len(words1) else None
        key, pid, snap_meta, snap_ids, gap_meta, drift_meta, n_out, left = K.apply_kernel(
            self._st,
            self._key,
            self._pid,
            batch.ts_event,
            batch.ts_recv,
            batch.flags,
            batch.first_id,
            batch.final_id,
            batch.prev_id,
            batch.checksum,
            batch.checksum_kind,
            batch.chain,
            batch.venue_depth,
            batch.level_offsets,
            batch.side,
            batch.price,
            batch.size,
            n0,
            self._arena,
            self._arena_off,
            batch.arena,
            batch.arena_offsets,
            self.depth,
            self.snapshot_interval_ns,
            _TABLE,
            m0,
            self.presync_buffer,
            self.presync_window_ns,
            order,
            clock,
            epoch,
            tops,
            counters,
            words0,
            words1,
            *SCALE_LIMITS,
        )
        self._key, self._pid = key, pid
        if n:
            self._buffer = batch.take(left) if len(left) else None
        order = order[:n_out]
        arenas = (n0, self._arena, self._arena_off, batch.arena, batch.arena_offsets)
        nl = batch.n_levels
        pending = self._pending_gaps
        self._pending_gaps = []
        stats = BookStats(**{name: int(counters[i]) for i, name in _STAT_ORDER})
        stats.gaps += len(pending)
        stats.dropped_presync += self._pending_dropped
        self._pending_dropped = 0
        drifts = [self._drift_row(batch, row, arenas) for row in drift_meta.tolist()]
        gaps = self._gaps(batch, gap_meta, pending, segment, [d for d, _ in drifts])
        if tables:
            out = BookOutput(
                deltas=_delta_rows(batch, order, clock, epoch, dec),  # type: ignore[arg-type]
                snapshots=_snapshot_table(
                    self._snapshots(batch, snap_meta, snap_ids, arenas, words)
                ),
                gaps=gaps,
                stats=stats,
                lazy_tops=functools.partial(self._tops, batch, order, clock, tops, arenas)
                if self.record_tops
                else None,
            )
        else:
            out = BookOutput(
                deltas=_empty(BOOK_DELTAS),
                snapshots=_empty(BOOK_SNAPSHOTS),
                gaps=gaps,
                stats=stats,
            )
        if drifts:
            out.drift = pa.Table.from_pylist([row for _, row in drifts], schema=BOOK_DRIFT)
        if n:
            self._channel = batch.channels[int(batch.channel[-1])]
        # keep only the strings the book still uses, in canonical order
        self._arena, self._arena_off = K.compact(
            self._key, self._pid, self._st, n0, nl, *arenas[1:]
        )
        return out

    def reconnect(self, ts_recv: int, segment: str = "", reason: str = "") -> None:
        """The venue connection was interrupted: end the epoch (gap row, cause ``reconnect``,
        delivered with the next apply() output) and wait for the next exchange snapshot.
        `reason` is the daemon's (a dropped connection, a sequence gap, ...)."""
        detail = "connection interrupted; waiting for the next exchange snapshot"
        self._pending_gaps.append(
            {
                "channel": self._channel,
                "ts_from": int(self._st[K.S_LAST_GOOD_TS]),
                "ts_to": int(ts_recv),
                "cause": "reconnect",
                "book_epoch": int(self._st[K.S_EPOCH]),
                "detail": f"{reason}: {detail}" if reason else detail,
                "segment": segment or self.segment,
            }
        )
        self._st[K.S_VALID] = 0
        self._st[K.S_NEED_BRIDGE] = 0
        self._st[K.S_PENDING] = K.R_RECONNECT
        # buffered updates precede the hole in the stream: no snapshot can bridge them now
        self._pending_dropped += self.buffered
        self._buffer = None
        self._st[K.S_EVICTED] = 0

    def state(self) -> bytes:
        """Deterministic checkpoint: depends only on the book content, epoch, chain and
        snapshot timers, pending gap rows and the pre-snapshot buffer, never on memory layout
        or batch history. The buffer keys are written only when there is something to say, so
        a checkpoint without them reads as before (and older checkpoints load)."""
        st = self._st
        nb = int(st[K.S_HI0] - st[K.S_LO0])
        na = int(st[K.S_HI1] - st[K.S_LO1])
        keys = np.concatenate(
            [
                self._key[0, st[K.S_LO0] : st[K.S_HI0]][::-1],
                self._key[1, st[K.S_LO1] : st[K.S_HI1]][::-1],
            ]
        ).astype("<f8")
        # apply() leaves the arena compact and in canonical order (bids then asks, best
        # first), and _load() restores exactly that, so it can be written as is
        arena, offs = self._arena, self._arena_off
        header = {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "scalars": [int(x) for x in st[: K.N_STATE_SERIAL]],
            "bids": nb,
            "asks": na,
            "arena": len(arena),
            "channel": self._channel,
            "pending_gaps": self._pending_gaps,
        }
        if self._buffer is not None:
            header["buffer"] = self._buffer.to_columns_dict()
        if self._st[K.S_EVICTED]:
            header["buffer_evicted"] = int(self._st[K.S_EVICTED])
        if self._pending_dropped:
            header["pending_dropped"] = self._pending_dropped
        # always written: a checkpoint from before this key compared every snapshot
        header["updated_since_snapshot"] = bool(st[K.S_UPDATED])
        head = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
        return b"".join(
            [
                _MAGIC,
                len(head).to_bytes(4, "little"),
                head,
                keys.tobytes(),
                offs.astype("<i8").tobytes(),
                arena.tobytes(),
            ]
        )

    # ------------------------------------------------------------------ internals
    def _load(self, data: bytes) -> None:
        if not data.startswith(_MAGIC):
            raise BookStateError("book state: not a FluxForge book checkpoint (bad magic)")
        try:
            hlen = int.from_bytes(data[8:12], "little")
            header = orjson.loads(data[12 : 12 + hlen])
            pos = 12 + hlen
            nb, na, alen = int(header["bids"]), int(header["asks"]), int(header["arena"])
            nl = nb + na
            keys = np.frombuffer(data, dtype="<f8", count=nl, offset=pos)
            pos += 8 * nl
            offs = np.frombuffer(data, dtype="<i8", count=2 * nl + 1, offset=pos)
            pos += 8 * (2 * nl + 1)
            arena = np.frombuffer(data, dtype=np.uint8, count=alen, offset=pos)
            pos += alen
            scalars = header["scalars"]
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise BookStateError(f"book state: corrupt checkpoint ({exc})") from None
        if pos != len(data) or len(scalars) != K.N_STATE_SERIAL:
            raise BookStateError(f"book state: corrupt checkpoint ({len(data)} bytes)")
        if (header["exchange"], header["symbol"]) != (self.exchange, self.symbol):
            raise BookStateError(
                f"book state is for {header['exchange']} {header['symbol']}, "
                f"not {self.exchange} {self.symbol}"
            )
        cap = max(_INITIAL_CAP, 4 * max(nb, na, 1))
        self._key = np.zeros((2, cap), dtype=np.float64)
        self._pid = np.zeros((2, cap), dtype=np.int64)
        self._st[: K.N_STATE_SERIAL] = scalars
        rank = 0
        for s, count in ((0, nb), (1, na)):
            start = (cap - count) // 2
            self._st[K.S_LO0 + 2 * s] = start
            self._st[K.S_HI0 + 2 * s] = start + count
            for j in range(count):  # canonical order is best first; the layout has best last
                slot = start + count - 1 - j
                self._key[s, slot] = keys[rank]
                self._pid[s, slot] = 2 * rank
                rank += 1
        self._arena = arena.copy()
        self._arena_off = offs.astype(np.int64)
        self._channel = header["channel"]
        self._pending_gaps = list(header["pending_gaps"])
        try:
            buffered = header.get("buffer")
            self._buffer = None if buffered is None else BookBatch.from_columns_dict(buffered)
            self._st[K.S_EVICTED] = int(header.get("buffer_evicted", 0))
            self._pending_dropped = int(header.get("pending_dropped", 0))
            self._st[K.S_UPDATED] = bool(header.get("updated_since_snapshot", True))
        except (KeyError, ValueError, TypeError, BookInputError) as exc:
            raise BookStateError(f"book state: corrupt pre-snapshot buffer ({exc})") from None

    def _snapshots(
        self,
        batch: BookBatch,
        meta: np.ndarray,
        ids: np.ndarray,
        arenas: tuple,
        words: tuple[np.ndarray, np.ndarray] | None,
    ) -> _SnapshotRows | None:
        """The injected snapshot rows of one apply, as columns (values read from the arenas
        now: the book's arena is compacted after the apply; `words`: the decimal words of
        both arenas' strings when parsed already); None when there are none."""
        k = meta.shape[0]
        if k == 0:
            return None
        d = self.depth
        msg = meta[:, 0]
        at = meta[:, 5]  # the clock: receive time and seq the row sorts by
        lists = []
        for part, count_col in ((0, 3), (1, 3), (2, 4), (3, 4)):
            counts = meta[:, count_col]
            block = ids[:, part * d : (part + 1) * d]
            mask = np.arange(d)[None, :] < counts[:, None]
            flat = np.ascontiguousarray(block[mask])
            if words is None:
                values = _decimal_column(flat, arenas)
            else:  # already parsed: the words of the levels shown
                values = pa.Array.from_buffers(
                    DECIMAL, len(flat), [None, pa.py_buffer(K.words_of(flat, arenas[0], *words))]
                )
            lists.append((counts, values))
        return _SnapshotRows(
            ts_event=batch.ts_event[msg],
            ts_recv=batch.ts_recv[at],
            venue_symbol=[batch.venue_symbols[int(batch.venue_symbol[m])] for m in msg],
            depth=np.full(k, d, dtype=np.int32),
            lists=lists,
            reason=meta[:, 1].copy(),
            book_epoch=meta[:, 2].astype(np.int32),
            update_id=batch.final_id[msg],
            seq=batch.seq[at],
        )

    def _drift_row(self, batch: BookBatch, event: list[int], arenas: tuple) -> tuple[D.Drift, dict]:
        """One drift event of the kernel (message, epoch, prices compared, levels differing,
        string ids of the two sizes at the largest difference) as its ``Drift`` and its
        book_drift row."""
        m, epoch, compared, differing, want, have = event
        if differing < 0:  # not reachable: every level was parsed on input
            raise BookStateError(f"book {self.exchange} {self.symbol}: a level is not decimal")

        def size(d: int) -> Decimal:
            # the wire text of a size (a Decimal keeps the venue's digits: "2141.49")
            if d < 0:
                return Decimal(0)
            n0, a0, o0, a1, o1 = arenas
            arr, offs, i = (a0, o0, d) if d < n0 else (a1, o1, d - n0)
            return Decimal(arr[offs[i] : offs[i + 1]].tobytes().decode())

        found = D.Drift(compared, differing, abs(size(want) - size(have)))
        return found, {
            "ts_event": int(batch.ts_event[m]),
            "ts_recv": int(batch.ts_recv[m]),
            "venue_symbol": batch.venue_symbols[int(batch.venue_symbol[m])],
            "book_epoch": epoch,
            "update_id": int(batch.final_id[m]),
            "seq": int(batch.seq[m]),
            "from_rest": bool(batch.flags[m] & K.F_REST),
            "integrity": self._integrity,
            "levels_compared": compared,
            "levels_differing": differing,
            "max_size_diff": found.max_size_diff,
        }

    def _gaps(
        self,
        batch: BookBatch,
        meta: np.ndarray,
        pending: list[dict],
        segment: str,
        drifts: list[D.Drift],
    ) -> pa.Table:
        """Gap-ledger rows: `pending` (a reconnect's), then the kernel's gap events in order;
        a drift event's row (cause book_drift) describes ``drifts[expected]``. The kernel's
        rows are built as columns: a feed that breaks on every message gives tens of
        thousands of them per segment."""
        if not pending and not len(meta):
            return _empty(GAP_LEDGER)
        parts = [pa.Table.from_pylist(pending, schema=GAP_LEDGER)] if pending else []
        if len(meta):
            found = _kernel_gaps(batch, meta, segment, drifts)
            self._warn_gaps(found)
            parts.append(found)
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _warn_gaps(self, rows: pa.Table) -> None:
        """One warning per apply: the first gap in full, and how many followed. Every gap is
        a gap-ledger row; a line per gap made a broken feed cost more in logging than in
        refining (about 75 µs a line, thousands per segment)."""
        first = rows.slice(0, 1).to_pylist()[0]
        more = ""
        if rows.num_rows > 1:
            causes = Counter(rows.column("cause").to_pylist())
            counts = ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
            last_epoch = rows.column("book_epoch")[-1].as_py()
            more = (
                f"; {rows.num_rows} gaps in this batch ({counts}), epochs "
                f"{first['book_epoch']}-{last_epoch}: see gap_ledger"
            )
        log.warning(
            "book %s %s: %s, epoch %d ended (%s)%s",
            self.exchange,
            self.symbol,
            first["cause"],
            first["book_epoch"],
            first["detail"],
            more,
        )

    def _tops(
        self,
        batch: BookBatch,
        order: np.ndarray,
        clock: np.ndarray,
        tops: np.ndarray,
        arenas: tuple,
    ) -> list[Top]:
        if len(order) == 0:
            return []
        flat = np.ascontiguousarray(tops[order].reshape(-1))
        data, offs = K.gather(flat, *arenas)
        strs = pa.LargeStringArray.from_buffers(
            len(flat), pa.py_buffer(offs), pa.py_buffer(data), null_count=0
        ).to_pylist()
        ts = batch.ts_recv[clock[order]].tolist()
        fid = batch.final_id[order].tolist()
        return [
            (ts[i], fid[i], strs[4 * i], strs[4 * i + 1], strs[4 * i + 2], strs[4 * i + 3])
            for i in range(len(order))
        ]
