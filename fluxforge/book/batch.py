"""Columnar form of a run of ``BookMessage``s: what the numba kernel consumes.

Per message: timestamps, flags, update ids, checksum, chain kind, venue depth and the offset
of its levels. Per level (flattened, bids of a message then its asks): side, price key,
size as float64 (only used for "is zero"), and the exact wire strings of price and size in one
byte arena (prices are ids ``0..L``, sizes ``L..2L``), laid out like an Arrow large_string.

Price keys are the float64 nearest to the wire decimal (correctly rounded parse, so one string
always gives the same key and "0.5" and "0.50" are the same level). Two different decimals only
collide when they agree to ~16 significant digits, far beyond any venue's tick size. The float
never reaches an output: rows, snapshots and checksums use the original strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

from fluxforge.book import kernel as K
from fluxforge.events import (
    CHAIN_BINANCE_FUTURES,
    CHAIN_BINANCE_SPOT,
    CHECKSUM_KRAKEN,
    CHECKSUM_OKX,
    BookMessage,
)

_CHECKSUM_KINDS = {None: K.CK_NONE, CHECKSUM_KRAKEN: K.CK_KRAKEN, CHECKSUM_OKX: K.CK_OKX}
_CHAINS = {
    None: K.CH_NONE,
    CHAIN_BINANCE_FUTURES: K.CH_BINANCE_FUTURES,
    CHAIN_BINANCE_SPOT: K.CH_BINANCE_SPOT,
}


class BookInputError(ValueError):
    """A book message cannot be turned into a batch; the text names the message and field."""


@dataclass
class BookBatch:
    ts_event: np.ndarray  # int64[n]
    ts_recv: np.ndarray  # int64[n]
    seq: np.ndarray  # int64[n]
    flags: np.ndarray  # uint8[n]: F_SNAPSHOT | F_REST
    first_id: np.ndarray  # int64[n]
    final_id: np.ndarray  # int64[n]
    prev_id: np.ndarray  # int64[n]
    checksum: np.ndarray  # int64[n]
    checksum_kind: np.ndarray  # int8[n]: CK_*
    chain: np.ndarray  # int8[n]: CH_*
    venue_depth: np.ndarray  # int32[n]: truncate the book to this after the message (0 = no)
    level_offsets: np.ndarray  # int64[n+1]
    side: np.ndarray  # uint8[L]: 0 bid, 1 ask
    price: np.ndarray  # float64[L] price key
    size: np.ndarray  # float64[L]
    arena: np.ndarray  # uint8: price strings then size strings
    arena_offsets: np.ndarray  # int64[2L+1]
    venue_symbol: np.ndarray  # int32[n] index into venue_symbols
    channel: np.ndarray  # int32[n] index into channels
    venue_symbols: list[str]
    channels: list[str]
    # the lake decimal (``fluxforge.tables.DECIMAL``, two int64 words each) of every level's
    # price, then of every size, when the scan that built the batch read them with the keys;
    # None: the engine parses the strings (``fluxforge.book.engine``)
    words: np.ndarray | None = None  # int64[4L]

    def __len__(self) -> int:
        return int(self.ts_event.shape[0])

    @property
    def n_levels(self) -> int:
        return int(self.side.shape[0])

    def strings(self, which: str) -> pa.LargeStringArray:
        """Wire strings of every level's price ("price") or size ("size"), zero-copy."""
        n = self.n_levels
        start = 0 if which == "price" else n
        offs = self.arena_offsets[start : start + n + 1]
        return pa.LargeStringArray.from_buffers(
            n, pa.py_buffer(offs), pa.py_buffer(self.arena), null_count=0
        )

    @classmethod
    def from_columns(
        cls,
        *,
        ts_event: np.ndarray,
        ts_recv: np.ndarray,
        level_offsets: np.ndarray,
        side: np.ndarray,
        price_strings: pa.Array,
        size_strings: pa.Array,
        venue_symbol: str,
        channel: str,
        **fields: Any,
    ) -> BookBatch:
        """Build a batch from columns (the benchmark, the checkpoint): prices and sizes as
        Arrow string arrays of the wire text, one entry per level; `fields` as
        ``from_arena``."""
        n_lv = len(side)
        px = pa.array(price_strings, type=pa.large_string())
        sz = pa.array(size_strings, type=pa.large_string())
        if len(px) != n_lv or len(sz) != n_lv:
            raise BookInputError(
                f"price/size strings have {len(px)}/{len(sz)} entries for {n_lv} levels"
            )
        if px.null_count or sz.null_count:
            raise BookInputError("price/size strings must not be null")
        pkey, skey = level_keys(px), level_keys(sz)
        arena, arena_offsets = arena_of(px, sz)
        return cls.from_arena(
            ts_event=ts_event,
            ts_recv=ts_recv,
            level_offsets=level_offsets,
            side=side,
            arena=arena,
            arena_offsets=arena_offsets,
            price_key=pkey,
            size_key=skey,
            venue_symbol=venue_symbol,
            channel=channel,
            **fields,
        )

    @classmethod
    def from_arena(
        cls,
        *,
        ts_event: np.ndarray,
        ts_recv: np.ndarray,
        level_offsets: np.ndarray,
        side: np.ndarray,
        arena: np.ndarray,
        arena_offsets: np.ndarray,
        price_key: np.ndarray,
        size_key: np.ndarray,
        venue_symbol: str,
        channel: str,
        seq: np.ndarray | None = None,
        is_snapshot: np.ndarray | None = None,
        from_rest: np.ndarray | None = None,
        first_id: np.ndarray | None = None,
        final_id: np.ndarray | None = None,
        prev_id: np.ndarray | None = None,
        checksum: np.ndarray | None = None,
        checksum_kind: str | None = None,
        chain: str | None = None,
        venue_depth: int = 0,
        words: np.ndarray | None = None,
    ) -> BookBatch:
        """Build a batch from columns whose level strings are already one arena (the demux's
        level columns, ``fluxforge.demux.fastbook``): prices then sizes, `arena_offsets`
        from 0 (2L+1 entries), with the float key of each (``level_keys``'s values) and,
        when the scan read them, their lake decimals (`words`: ``BookBatch.words``)."""
        n = len(ts_event)
        n_lv = len(side)
        if len(arena_offsets) != 2 * n_lv + 1 or len(price_key) != n_lv or len(size_key) != n_lv:
            raise BookInputError(
                f"arena offsets/keys have {len(arena_offsets)}/{len(price_key)}/"
                f"{len(size_key)} entries for {n_lv} levels"
            )
        if words is not None and len(words) != 4 * n_lv:
            raise BookInputError(f"decimal words have {len(words)} entries for {n_lv} levels")
        if arena_offsets[0] != 0 or arena_offsets[-1] != len(arena):
            raise BookInputError("arena offsets must run from 0 to the arena's length")
        _check_levels(price_key, size_key, np.asarray(level_offsets))

        def col(a: np.ndarray | None, dtype: type, fill: int) -> np.ndarray:
            if a is None:
                return np.full(n, fill, dtype=dtype)
            return np.ascontiguousarray(a, dtype=dtype)

        flags = np.zeros(n, dtype=np.uint8)
        if is_snapshot is not None:
            flags |= np.asarray(is_snapshot, dtype=np.uint8) * K.F_SNAPSHOT
        if from_rest is not None:
            flags |= np.asarray(from_rest, dtype=np.uint8) * K.F_REST
        ck = col(checksum, np.int64, 0)
        return cls(
            ts_event=col(ts_event, np.int64, 0),
            ts_recv=col(ts_recv, np.int64, 0),
            seq=col(seq, np.int64, -1),
            flags=flags,
            first_id=col(first_id, np.int64, -1),
            final_id=col(final_id, np.int64, -1),
            prev_id=col(prev_id, np.int64, -1),
            checksum=ck,
            checksum_kind=np.full(
                n, _CHECKSUM_KINDS[checksum_kind] if checksum is not None else 0, np.int8
            ),
            chain=np.full(n, _CHAINS[chain], dtype=np.int8),
            venue_depth=np.full(n, venue_depth, dtype=np.int32),
            level_offsets=np.ascontiguousarray(level_offsets, dtype=np.int64),
            side=np.ascontiguousarray(side, dtype=np.uint8),
            price=np.ascontiguousarray(price_key, dtype=np.float64),
            size=np.ascontiguousarray(size_key, dtype=np.float64),
            arena=np.ascontiguousarray(arena, dtype=np.uint8),
            arena_offsets=np.ascontiguousarray(arena_offsets, dtype=np.int64),
            venue_symbol=np.zeros(n, dtype=np.int32),
            channel=np.zeros(n, dtype=np.int32),
            venue_symbols=[venue_symbol],
            channels=[channel],
            words=None if words is None else np.ascontiguousarray(words, dtype=np.int64),
        )

    @classmethod
    def from_messages(cls, messages: Sequence[BookMessage]) -> BookBatch:
        """Columns of BookMessages (field by field, so numpy converts in bulk)."""
        n = len(messages)

        def ints(name: str) -> np.ndarray:
            return np.fromiter(map(attrgetter(name), messages), np.int64, n)

        def codes(name: str, table: dict) -> np.ndarray:
            values = list(map(attrgetter(name), messages))
            if values.count(None) == n:  # the usual case: one venue, no such field
                return np.zeros(n, np.int8)
            return np.array([table[v] for v in values], dtype=np.int8)

        try:
            ts_event, ts_recv, seq = ints("ts_event"), ints("ts_recv"), ints("seq")
            first_id, final_id, prev_id = ints("first_id"), ints("final_id"), ints("prev_id")
            depth = ints("depth").astype(np.int32)
            raw_ck = list(map(attrgetter("checksum"), messages))
            has_ck = np.array([c is not None for c in raw_ck], dtype=bool)
            if has_ck.any():
                checksum = np.array([c or 0 for c in raw_ck], dtype=np.int64)
                ck_kind = codes("checksum_kind", _CHECKSUM_KINDS) * has_ck
            else:
                checksum = np.zeros(n, np.int64)
                ck_kind = np.zeros(n, np.int8)
            chain = codes("chain", _CHAINS)
            flags = np.fromiter(map(attrgetter("is_snapshot"), messages), bool, n).astype(
                np.uint8
            ) * np.uint8(K.F_SNAPSHOT) | np.fromiter(
                map(attrgetter("from_rest"), messages), bool, n
            ).astype(np.uint8) * np.uint8(K.F_REST)
            n_bids = np.fromiter(map(len, map(attrgetter("bids"), messages)), np.int64, n)
            n_asks = np.fromiter(map(len, map(attrgetter("asks"), messages)), np.int64, n)
            levels: list[tuple[str, str]] = []
            for m in messages:
                levels += m.bids
                levels += m.asks
            prices = [lv[0] for lv in levels]
            sizes = [lv[1] for lv in levels]
        except (KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
            raise BookInputError(_culprit(messages, exc)) from None
        counts = np.stack([n_bids, n_asks], axis=1).reshape(-1)  # bids0, asks0, bids1, ...
        side = np.repeat(np.tile(np.array([0, 1], np.uint8), n), counts)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(n_bids + n_asks, out=offsets[1:])
        vs_idx, venue_symbols = _dictionary(list(map(attrgetter("venue_symbol"), messages)))
        ch_idx, channels = _dictionary(list(map(attrgetter("channel"), messages)))
        try:
            px_arr = pa.array(prices, type=pa.large_string())
            sz_arr = pa.array(sizes, type=pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise BookInputError(f"book level price/size is not a decimal string: {exc}") from None
        pkey, skey = level_keys(px_arr), level_keys(sz_arr)
        _check_levels(pkey, skey, offsets)
        arena, arena_offsets = arena_of(px_arr, sz_arr)
        return cls(
            ts_event=ts_event,
            ts_recv=ts_recv,
            seq=seq,
            flags=flags,
            first_id=first_id,
            final_id=final_id,
            prev_id=prev_id,
            checksum=checksum,
            checksum_kind=ck_kind.astype(np.int8),
            chain=chain,
            venue_depth=depth,
            level_offsets=offsets,
            side=side,
            price=pkey,
            size=skey,
            arena=arena,
            arena_offsets=arena_offsets,
            venue_symbol=vs_idx,
            channel=ch_idx,
            venue_symbols=venue_symbols,
            channels=channels,
        )

    def take(self, idx: np.ndarray) -> BookBatch:
        """Messages ``idx`` (in that order) as a batch of their own, strings copied out of this
        batch's arena (the pre-snapshot buffer outlives the batch it came in)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        counts = np.diff(self.level_offsets)[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        lv = level_ranges(self.level_offsets[:-1][idx], counts)
        pick = pa.array(lv, pa.int64())
        arena, arena_offsets = arena_of(
            self.strings("price").take(pick), self.strings("size").take(pick)
        )
        return BookBatch(
            ts_event=self.ts_event[idx],
            ts_recv=self.ts_recv[idx],
            seq=self.seq[idx],
            flags=self.flags[idx],
            first_id=self.first_id[idx],
            final_id=self.final_id[idx],
            prev_id=self.prev_id[idx],
            checksum=self.checksum[idx],
            checksum_kind=self.checksum_kind[idx],
            chain=self.chain[idx],
            venue_depth=self.venue_depth[idx],
            level_offsets=offsets,
            side=self.side[lv],
            price=self.price[lv],
            size=self.size[lv],
            arena=arena,
            arena_offsets=arena_offsets,
            venue_symbol=self.venue_symbol[idx],
            channel=self.channel[idx],
            venue_symbols=list(self.venue_symbols),
            channels=list(self.channels),
            words=None if self.words is None else words_take(self.words, lv),
        )

    def slice(self, lo: int, hi: int) -> BookBatch:
        """Messages ``lo..hi-1`` as a batch of their own: ``take(np.arange(lo, hi))`` for a
        contiguous range, with the arena copied as two byte ranges (prices, then sizes)
        instead of string by string."""
        l0, l1 = int(self.level_offsets[lo]), int(self.level_offsets[hi])
        arena, arena_offsets = arena_slice(self.arena, self.arena_offsets, l0, l1)
        return BookBatch(
            ts_event=self.ts_event[lo:hi],
            ts_recv=self.ts_recv[lo:hi],
            seq=self.seq[lo:hi],
            flags=self.flags[lo:hi],
            first_id=self.first_id[lo:hi],
            final_id=self.final_id[lo:hi],
            prev_id=self.prev_id[lo:hi],
            checksum=self.checksum[lo:hi],
            checksum_kind=self.checksum_kind[lo:hi],
            chain=self.chain[lo:hi],
            venue_depth=self.venue_depth[lo:hi],
            level_offsets=self.level_offsets[lo : hi + 1] - l0,
            side=self.side[l0:l1],
            price=self.price[l0:l1],
            size=self.size[l0:l1],
            arena=arena,
            arena_offsets=arena_offsets,
            venue_symbol=self.venue_symbol[lo:hi],
            channel=self.channel[lo:hi],
            venue_symbols=list(self.venue_symbols),
            channels=list(self.channels),
            words=None if self.words is None else words_slice(self.words, l0, l1),
        )

    @classmethod
    def concat(cls, batches: Sequence[BookBatch]) -> BookBatch:
        """The messages of ``batches`` one after the other (dictionaries merged)."""
        vs_codes, venue_symbols = _merge_dictionaries(
            [(b.venue_symbol, b.venue_symbols) for b in batches]
        )
        ch_codes, channels = _merge_dictionaries([(b.channel, b.channels) for b in batches])
        offsets = [np.zeros(1, np.int64)]
        base = 0
        for b in batches:
            offsets.append(b.level_offsets[1:] + base)
            base += b.n_levels
        arena, arena_offsets = arena_of(
            pa.concat_arrays([b.strings("price") for b in batches]),
            pa.concat_arrays([b.strings("size") for b in batches]),
        )

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in batches])

        words = None
        if all(b.words is not None for b in batches):
            prices = [b.words[: 2 * b.n_levels] for b in batches]  # type: ignore[index]
            sizes = [b.words[2 * b.n_levels :] for b in batches]  # type: ignore[index]
            words = np.concatenate([*prices, *sizes])

        return cls(
            ts_event=cat("ts_event"),
            ts_recv=cat("ts_recv"),
            seq=cat("seq"),
            flags=cat("flags"),
            first_id=cat("first_id"),
            final_id=cat("final_id"),
            prev_id=cat("prev_id"),
            checksum=cat("checksum"),
            checksum_kind=cat("checksum_kind"),
            chain=cat("chain"),
            venue_depth=cat("venue_depth"),
            level_offsets=np.concatenate(offsets),
            side=cat("side"),
            price=cat("price"),
            size=cat("size"),
            arena=arena,
            arena_offsets=arena_offsets,
            venue_symbol=vs_codes,
            channel=ch_codes,
            venue_symbols=venue_symbols,
            channels=channels,
            words=words,
        )

    def to_columns_dict(self) -> dict[str, list]:
        """Plain JSON-able columns (the engine's checkpoint of its pre-snapshot buffer); names
        and strings by value, so equal batches give equal dicts."""
        out: dict[str, list] = {name: getattr(self, name).tolist() for name in _INT_COLUMNS}
        out["price"] = self.strings("price").to_pylist()
        out["size"] = self.strings("size").to_pylist()
        out["venue_symbol"] = [self.venue_symbols[i] for i in self.venue_symbol.tolist()]
        out["channel"] = [self.channels[i] for i in self.channel.tolist()]
        return out

    @classmethod
    def from_columns_dict(cls, data: dict[str, list]) -> BookBatch:
        """Inverse of ``to_columns_dict`` (KeyError/ValueError/BookInputError when corrupt)."""
        n = len(data["ts_event"])
        if not n:
            raise ValueError("empty batch")
        batch = cls.from_columns(
            ts_event=np.asarray(data["ts_event"], np.int64),
            ts_recv=np.asarray(data["ts_recv"], np.int64),
            level_offsets=np.asarray(data["level_offsets"], np.int64),
            side=np.asarray(data["side"], np.uint8),
            price_strings=pa.array(data["price"], pa.large_string()),
            size_strings=pa.array(data["size"], pa.large_string()),
            venue_symbol="",
            channel="",
        )
        for name in _INT_COLUMNS:
            column = np.asarray(data[name], getattr(batch, name).dtype)
            if column.shape != getattr(batch, name).shape:
                raise ValueError(f"column {name} has {column.shape} entries")
            setattr(batch, name, column)
        batch.venue_symbol, batch.venue_symbols = _dictionary(list(data["venue_symbol"]))
        batch.channel, batch.channels = _dictionary(list(data["channel"]))
        if len(batch.venue_symbol) != n or len(batch.channel) != n:
            raise ValueError("venue_symbol/channel columns do not match the messages")
        return batch


def level_keys(strings: pa.Array) -> np.ndarray:
    """The float key of each wire string (the module doc: the float64 nearest to the decimal;
    Arrow's cast rounds correctly)."""
    try:
        return strings.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise BookInputError(f"book level price/size is not a decimal number: {exc}") from None


def arena_slice(
    arena: np.ndarray, arena_offsets: np.ndarray, l0: int, l1: int
) -> tuple[np.ndarray, np.ndarray]:
    """(arena, offsets) of levels ``l0..l1-1`` of an arena of prices then sizes: the whole
    arena itself, else the two byte ranges copied (prices, then sizes)."""
    n = (len(arena_offsets) - 1) // 2
    if l0 == 0 and l1 == n:
        return arena, arena_offsets
    po = arena_offsets[l0 : l1 + 1]
    so = arena_offsets[n + l0 : n + l1 + 1]
    out = np.concatenate([arena[int(po[0]) : int(po[-1])], arena[int(so[0]) : int(so[-1])]])
    return out, np.concatenate([po - po[0], so[1:] - so[0] + (po[-1] - po[0])])


def words_slice(words: np.ndarray, l0: int, l1: int) -> np.ndarray:
    """``BookBatch.words`` of levels l0..l1-1 (their prices, then their sizes)."""
    n = len(words) // 4
    if l0 == 0 and l1 == n:
        return words  # (a whole batch: no copy)
    return np.concatenate((words[2 * l0 : 2 * l1], words[2 * (n + l0) : 2 * (n + l1)]))


def words_take(words: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """``BookBatch.words`` of levels `lv` (their prices, then their sizes)."""
    pairs = words.reshape(-1, 2)
    return np.concatenate((pairs[lv], pairs[lv + len(pairs) // 2])).reshape(-1)


def level_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``range(start, start + count)`` for each pair (vectorized)."""
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(
        int(ends[-1]) if len(ends) else 0, dtype=np.int64
    )


# per-message integer columns (plus level_offsets and side) of the checkpoint dict
_INT_COLUMNS = (
    "ts_event",
    "ts_recv",
    "seq",
    "flags",
    "first_id",
    "final_id",
    "prev_id",
    "checksum",
    "checksum_kind",
    "chain",
    "venue_depth",
    "level_offsets",
    "side",
)


def _merge_dictionaries(
    parts: list[tuple[np.ndarray, list[str]]],
) -> tuple[np.ndarray, list[str]]:
    """Codes of several dictionary-encoded columns re-encoded against one merged dictionary."""
    merged: dict[str, int] = {}
    codes = []
    for part_codes, values in parts:
        remap = np.array([merged.setdefault(v, len(merged)) for v in values], np.int32)
        codes.append(remap[part_codes] if len(part_codes) else part_codes.astype(np.int32))
    return np.concatenate(codes).astype(np.int32), list(merged)


def _dictionary(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """(int32 codes, distinct values in first-seen order); one value is the usual case."""
    if not values or values.count(values[0]) == len(values):
        return np.zeros(len(values), np.int32), values[:1]
    enc = pa.array(values, pa.string()).dictionary_encode()
    return enc.indices.to_numpy().astype(np.int32), enc.dictionary.to_pylist()


def _culprit(messages: Sequence[BookMessage], exc: Exception) -> str:
    """Name the first message that cannot be converted (the slow path, errors only)."""
    for i, m in enumerate(messages):
        try:
            np.array(
                [m.ts_event, m.ts_recv, m.seq, m.first_id, m.final_id, m.prev_id, m.depth,
                 m.checksum or 0],
                dtype=np.int64,
            )  # fmt: skip
            _CHECKSUM_KINDS[m.checksum_kind if m.checksum is not None else None]
            _CHAINS[m.chain]
            for lv in [*m.bids, *m.asks]:
                if len(lv) < 2 or not isinstance(lv[0], str) or not isinstance(lv[1], str):
                    raise TypeError(f"level {lv!r} is not a (price, size) pair of strings")
        except (KeyError, TypeError, ValueError, OverflowError, IndexError) as e:
            return f"book message {i} ({m.exchange} {m.symbol} seq {m.seq}): {e!r}"
    return f"book messages cannot be converted: {exc!r}"


def _check_levels(pkey: np.ndarray, skey: np.ndarray, offsets: np.ndarray) -> None:
    """Prices and sizes must be finite and non-negative: a NaN would break
    the sorted book silently."""
    bad = ~(np.isfinite(pkey) & (pkey >= 0) & np.isfinite(skey) & (skey >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = int(np.searchsorted(offsets, i, side="right") - 1)
        raise BookInputError(
            f"book message {msg}: level {i} has price {pkey[i]!r} / size {skey[i]!r} "
            "(prices and sizes must be finite and >= 0)"
        )


def _string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets rebased to 0, data bytes) of a large_string array."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    _, obuf, dbuf = a.buffers()
    offs = np.frombuffer(obuf, dtype=np.int64, count=len(a) + 1, offset=a.offset * 8)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.zeros(0, np.uint8)
    start, end = int(offs[0]), int(offs[-1])
    return offs - start, data[start:end]


def arena_of(px: pa.Array, sz: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(arena, offsets from 0) of the price strings `px` then the size strings `sz`."""
    po, pd = _string_buffers(px)
    so, sd = _string_buffers(sz)
    arena = np.concatenate([pd, sd])
    offsets = np.concatenate([po, so[1:] + po[-1]])
    return arena, offsets
