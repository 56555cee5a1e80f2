"""One columnar container for book messages (``FastBook``), built by the byte scanners and
merged with the per-line path's messages by line number (``merge_columns``).

A scanner records, per accepted message, a row of integers and, per level, (message row, side,
price span, size span); ``LevelColumns`` turns those into per-instrument level columns
(bids then asks of each message, each side in wire order: the normalizers' order) and
``one_code_per_symbol`` keeps one venue name per normalized symbol (one batch carries one
venue symbol and one channel; anything else is left to the per-line path).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fluxforge.book.batch import BookBatch, arena_of, arena_slice, level_keys, words_slice
from fluxforge.demux.bytescan import LV_COLS, arena_layout, level_arenas, level_order
from fluxforge.events import BookMessage
from fluxforge.heap import releasable, release
from fluxforge.storage.paths import sanitize_part
from fluxforge.wire.decimal import SCALE_LIMITS

_SAFE_CACHE: dict[str, bool] = {}
# levels laid out between two hand-backs of spent level rows (``LevelColumns.of_groups``):
# 20 MB of rows, the most held twice at any time
SPEND_LEVELS = 1 << 18
# level rows smaller than this are not spent: at the peak they weigh little, and pages
# handed back are faulted in again by the next arrays (the documented shapes mixed, 100 MB,
# rows of 20-60 MB per venue: about 0.1 s more CPU when spent; docs/performance.md)
SPEND_MIN_BYTES = 96 << 20


def _message_spans(counts: np.ndarray, levels: int | None) -> list[tuple[int, int]]:
    """Consecutive message ranges covering `counts` (levels per message), each of about
    `levels` levels (whole messages; one range when None)."""
    n = len(counts)
    if levels is None or n == 0:
        return [(0, n)]
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(levels, int(ends[-1]), levels), side="left") + 1
    bounds = [0, *sorted(set(np.minimum(cuts, n).tolist()) - {0, n}), n]
    return list(itertools.pairwise(bounds))


def safe_symbol(sym: str) -> bool:
    """A symbol must be its own path part (no '/', '..', NUL, ...): BASE-QUOTE[-...]."""
    ok = _SAFE_CACHE.get(sym)
    if ok is None:
        ok = isinstance(sym, str) and sanitize_part(sym) == sym
        if len(_SAFE_CACHE) < 100_000:
            _SAFE_CACHE[sym] = ok
    return ok


def checked_symbols(
    raws: list[str], symbol_of: Any, errors: tuple[type[Exception], ...]
) -> list[str | None]:
    """`symbol_of(raw)` per distinct venue name; None where it raises one of `errors` or gives
    an unsafe symbol (the per-line path then judges those lines)."""
    out: list[str | None] = []
    for raw in raws:
        try:
            sym = symbol_of(raw)
        except errors:
            sym = None
        out.append(sym if sym is not None and safe_symbol(sym) else None)
    return out


def one_code_per_symbol(
    codes: np.ndarray, msg_ok: np.ndarray, symbols: list[str | None]
) -> np.ndarray:
    """`msg_ok` without the messages of codes that share their symbol with another code."""
    by_symbol: dict[str, list[int]] = {}
    for c in np.unique(codes[msg_ok]).tolist():
        by_symbol.setdefault(symbols[c], []).append(c)  # type: ignore[arg-type]
    for cs in by_symbol.values():
        if len(cs) > 1:
            msg_ok = msg_ok & ~np.isin(codes, cs)
    return msg_ok


class LevelColumns:
    """The level rows `lv` (``bytescan.put_level``: message row, side, price start/end, size
    start/end, the first bytes of each) of the messages where `msg_ok`, per message: bids
    then asks, each side in wire order."""

    def __init__(self, buf: np.ndarray, lv: np.ndarray, msg_ok: np.ndarray, n_msg: int) -> None:
        if lv.ndim != 2 or lv.shape[1] != LV_COLS:
            raise ValueError(f"level rows must have {LV_COLS} columns (put_level), not {lv.shape}")
        self.buf = buf
        self.lv = np.ascontiguousarray(lv)
        self.n_msg = n_msg
        self.order, self.counts, self.first, self.px_bytes, self.sz_bytes, self.low = level_order(
            self.lv, msg_ok, n_msg
        )

    def of(self, sel: np.ndarray) -> dict[str, Any]:
        """The columns of one group of messages `sel` (``of_groups``)."""
        return self.of_groups([sel])[0]

    def of_groups(self, sels: list[np.ndarray], spend: bool = False) -> list[dict[str, Any]]:
        """level_offsets, side, arena, arena_offsets, price_key, size_key and words (each
        level's lake decimal, prices then sizes; None for a group holding a value outside the
        plain form) of the messages of each group (ascending rows, no row in two groups): one
        gather of every group at once, in segment order, straight into each batch's arena
        layout. With `spend`, rows of ``SPEND_MIN_BYTES`` or more are handed back to the
        kernel as they are read (``heap.release``: the rows and the columns are not both whole
        at the peak), and read as zeros afterwards: for the last call on these rows."""
        if not sels:
            return []
        bounds = np.zeros(len(sels) + 1, np.int64)
        bounds[1:] = np.cumsum([len(s) for s in sels])
        rows = np.concatenate(sels).astype(np.int64, copy=False)
        layout = arena_layout(self.counts, self.px_bytes, self.sz_bytes, rows, bounds, self.n_msg)
        lv_at, ar_at = layout[2], layout[3]
        n_grp, n_lv = len(sels), int(lv_at[-1])
        offsets, arena_offsets = layout[7], np.empty(2 * n_lv + n_grp, np.int64)
        arena_offsets[2 * lv_at[:-1] + np.arange(n_grp)] = 0
        cols = (
            np.empty(n_lv, np.uint8),  # side
            np.empty(int(ar_at[-1]), np.uint8),  # arena
            arena_offsets,
            np.empty(n_lv, np.float64),  # price keys
            np.empty(n_lv, np.float64),  # size keys
            np.zeros(n_lv, np.bool_),  # slow
            np.empty(4 * n_lv, np.int64),  # words
            np.ones(n_grp, np.bool_),  # exact
        )
        lv_bytes = self.lv.reshape(-1).view(np.uint8)
        row_bytes = self.lv.strides[0]
        spend = spend and self.lv.nbytes >= SPEND_MIN_BYTES
        for m0, m1 in _message_spans(self.counts, SPEND_LEVELS if spend else None):
            level_arenas(
                self.buf, self.lv, lv_bytes, self.order, self.first, self.counts, layout,
                m0, m1, cols, *SCALE_LIMITS,
            )  # fmt: skip
            if spend:
                release(self.lv, 0, int(self.low[m1]) * row_bytes)
        side, arena, arena_offsets, pkey, skey, slow, words, exact = cols
        bnd, lvs, ars = bounds.tolist(), lv_at.tolist(), ar_at.tolist()
        out = []
        for g in range(len(sels)):
            la, lb, o = lvs[g], lvs[g + 1], 2 * lvs[g] + g
            out.append(
                _level_columns(
                    offsets[bnd[g] + g : bnd[g + 1] + g + 1],
                    side[la:lb],
                    arena[ars[g] : ars[g + 1]],
                    arena_offsets[o : o + 2 * (lb - la) + 1],
                    pkey[la:lb],
                    skey[la:lb],
                    slow[la:lb],
                    words[4 * la : 4 * lb] if exact[g] else None,
                )
            )
        return out


def _level_columns(
    offsets: np.ndarray,
    side: np.ndarray,
    arena: np.ndarray,
    arena_offsets: np.ndarray,
    pkey: np.ndarray,
    skey: np.ndarray,
    slow: np.ndarray,
    words: np.ndarray | None,
) -> dict[str, Any]:
    """One group's level columns (slices of the arrays every group shares), the keys the
    fast rule declined filled in."""
    if slow.any():  # keys the fast rule cannot give: Arrow's cast, the batch's own rule
        idx = pa.array(np.flatnonzero(slow))
        n = len(side)
        pkey[slow] = level_keys(_strings(arena, arena_offsets[: n + 1]).take(idx))
        skey[slow] = level_keys(_strings(arena, arena_offsets[n:]).take(idx))
    return {
        "level_offsets": offsets,
        "side": side,
        "arena": arena,
        "arena_offsets": arena_offsets,
        "price_key": pkey,
        "size_key": skey,
        "words": words,
    }


def by_code(codes: np.ndarray, ok: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(code, ascending rows where `ok` with that code) per distinct code, codes ascending:
    one stable sort instead of a pass over every row per code."""
    rows = np.flatnonzero(ok)
    if not len(rows):
        return []
    picked = codes[rows]
    order = np.argsort(picked, kind="stable")
    rows, picked = rows[order], picked[order]
    cut = np.flatnonzero(picked[1:] != picked[:-1]) + 1
    bounds = [0, *cut.tolist(), len(rows)]
    return [(int(picked[a]), rows[a:b]) for a, b in itertools.pairwise(bounds)]


def _strings(arena: np.ndarray, offsets: np.ndarray) -> pa.LargeStringArray:
    """The strings at `offsets` (n+1 positions) of `arena`, zero-copy."""
    return pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(np.ascontiguousarray(offsets)), pa.py_buffer(arena)
    )


@dataclass
class FastBook:
    """Book messages of one instrument from the columnar path, in line order."""

    exchange: str
    symbol: str
    venue_symbol: str
    channel: str
    line: np.ndarray  # int64[n] line numbers (index + 1; receive order)
    ts_event: np.ndarray
    ts_recv: np.ndarray
    seq: np.ndarray
    is_snapshot: np.ndarray  # bool[n]
    level_offsets: np.ndarray  # int64[n+1]
    side: np.ndarray  # uint8[L] 0 bid 1 ask; per message bids first, then asks
    # the exact wire text of every level's price, then of every size, in one byte arena
    # (offsets from 0, 2L+1 of them: the book batch's layout) and their float keys
    arena: np.ndarray  # uint8
    arena_offsets: np.ndarray  # int64[2L+1]
    price_key: np.ndarray  # float64[L]
    size_key: np.ndarray  # float64[L]
    final_id: np.ndarray  # int64[n] venue update id (Advanced Trade sequence_num), -1 = none
    # the lake decimal of every price then every size (BookBatch.words), None: not read
    words: np.ndarray | None = None
    # integrity fields of the other venues' shapes (None: the default of every message)
    first_id: np.ndarray | None = None  # int64[n], -1 = none
    prev_id: np.ndarray | None = None  # int64[n], -1 = none
    from_rest: np.ndarray | None = None  # bool[n]: an exchange REST snapshot
    checksum: np.ndarray | None = None  # int64[n] venue checksum, 0 where has_checksum is False
    has_checksum: np.ndarray | None = None  # bool[n]
    checksum_kind: str | None = None  # of every message with a checksum
    chain: str | None = None
    depth: int = 0  # venue depth (BookMessage.depth) of every message

    def __len__(self) -> int:
        return len(self.line)

    @property
    def price(self) -> pa.LargeStringArray:
        """Every level's price, the wire text (zero-copy)."""
        return _strings(self.arena, self.arena_offsets[: len(self.side) + 1])

    @property
    def size(self) -> pa.LargeStringArray:
        """Every level's size, the wire text (zero-copy)."""
        return _strings(self.arena, self.arena_offsets[len(self.side) :])

    def batch(self, start: int, end: int) -> BookBatch:
        """Messages [start, end) as the book kernel's columnar batch."""
        lo, hi = int(self.level_offsets[start]), int(self.level_offsets[end])
        has_ck = None
        if self.has_checksum is not None and self.has_checksum[start:end].any():
            has_ck = self.has_checksum[start:end]
        arena, arena_offsets = arena_slice(self.arena, self.arena_offsets, lo, hi)
        batch = BookBatch.from_arena(
            ts_event=self.ts_event[start:end],
            ts_recv=self.ts_recv[start:end],
            level_offsets=self.level_offsets[start : end + 1] - lo,
            side=self.side[lo:hi],
            arena=arena,
            arena_offsets=arena_offsets,
            price_key=self.price_key[lo:hi],
            size_key=self.size_key[lo:hi],
            words=None if self.words is None else words_slice(self.words, lo, hi),
            venue_symbol=self.venue_symbol,
            channel=self.channel,
            seq=self.seq[start:end],
            is_snapshot=self.is_snapshot[start:end],
            final_id=self.final_id[start:end],
            first_id=_part(self.first_id, start, end),
            prev_id=_part(self.prev_id, start, end),
            from_rest=_part(self.from_rest, start, end),
            checksum=None if has_ck is None else _part(self.checksum, start, end),
            checksum_kind=None if has_ck is None else self.checksum_kind,
            chain=self.chain,
            venue_depth=self.depth,
        )
        if has_ck is not None and not has_ck.all():
            batch.checksum_kind[~has_ck] = 0  # as from_messages: no checksum, no kind
        return batch

    def release(self, l0: int, l1: int) -> None:
        """Hand the level columns of levels [l0, l1) back to the kernel (``heap.release``):
        for an owner that has applied them and reads them never again (they read as zeros
        afterwards). Columns this book does not own outright (read-only) are left whole."""
        n = len(self.side)
        ao = self.arena_offsets
        spans = [
            (self.side, l0, l1),
            (self.price_key, 8 * l0, 8 * l1),
            (self.size_key, 8 * l0, 8 * l1),
            (self.arena, int(ao[l0]), int(ao[l1])),  # prices, then sizes
            (self.arena, int(ao[n + l0]), int(ao[n + l1])),
            (ao, 8 * l0, 8 * l1),
            (ao, 8 * (n + l0), 8 * (n + l1)),
        ]
        if self.words is not None:  # two words per price, then two per size
            spans += [(self.words, 16 * l0, 16 * l1), (self.words, 16 * (n + l0), 16 * (n + l1))]
        for a, start, stop in spans:
            if releasable(a):
                release(a, start, stop)

    def to_messages(self) -> list[tuple[int, BookMessage]]:
        """The same messages as objects (for mixing with per-line messages of other shapes)."""
        px, sz = self.price.to_pylist(), self.size.to_pylist()
        out = []
        for i in range(len(self)):
            lo, hi = int(self.level_offsets[i]), int(self.level_offsets[i + 1])
            bids = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 0]
            asks = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 1]
            has_ck = self.has_checksum is not None and bool(self.has_checksum[i])
            msg = BookMessage(
                self.exchange, self.symbol, self.venue_symbol, self.channel,
                int(self.ts_event[i]), int(self.ts_recv[i]), int(self.seq[i]),
                bool(self.is_snapshot[i]), bids, asks, final_id=int(self.final_id[i]),
                first_id=-1 if self.first_id is None else int(self.first_id[i]),
                prev_id=-1 if self.prev_id is None else int(self.prev_id[i]),
                checksum=int(self.checksum[i]) if has_ck else None,  # type: ignore[index]
                checksum_kind=self.checksum_kind if has_ck else None,
                chain=self.chain, depth=self.depth,
                from_rest=self.from_rest is not None and bool(self.from_rest[i]),
            )  # fmt: skip
            out.append((int(self.line[i]), msg))
        return out


def merge_columns(fast: FastBook, msgs: list[tuple[int, BookMessage]]) -> FastBook | None:
    """`fast` plus per-line messages of the same instrument, in line order, as columns; None
    when a per-line message carries what the columns cannot (other channel/product, chain or
    venue depth, a checksum of another kind or where the columns carry none)."""
    if not msgs:
        return fast
    for _, m in msgs:
        if (
            m.channel != fast.channel
            or m.venue_symbol != fast.venue_symbol
            or m.chain != fast.chain
            or m.depth != fast.depth
            or (m.checksum is not None and (fast.has_checksum is None or m.checksum_kind is None))
            or (m.checksum is not None and m.checksum_kind != fast.checksum_kind)
        ):
            return None
    lines = np.concatenate([fast.line, [ln for ln, _ in msgs]]).astype(np.int64)
    order = np.argsort(lines, kind="stable")
    n_fast = len(fast)
    side: list[int] = []
    price: list[str] = []
    size: list[str] = []
    lens = []
    for _, m in msgs:
        for px, sz in m.bids:
            price.append(px)
            size.append(sz)
        for px, sz in m.asks:
            price.append(px)
            size.append(sz)
        side.extend([0] * len(m.bids) + [1] * len(m.asks))
        lens.append(len(m.bids) + len(m.asks))
    all_lens = np.concatenate([np.diff(fast.level_offsets), lens]).astype(np.int64)
    all_starts = np.concatenate(
        [fast.level_offsets[:-1], fast.level_offsets[-1] + np.cumsum([0, *lens[:-1]])]
    ).astype(np.int64)
    o_lens = all_lens[order]
    offsets = np.concatenate(([0], np.cumsum(o_lens))).astype(np.int64)
    lvl_idx = np.repeat(all_starts[order] - offsets[:-1], o_lens) + np.arange(offsets[-1])
    take = pa.array(lvl_idx, pa.int64())
    all_side = np.concatenate([fast.side, np.asarray(side, np.uint8)])
    line_px = pa.array(price, pa.large_string())
    line_sz = pa.array(size, pa.large_string())
    all_px = pa.concat_arrays([fast.price, line_px]).take(take)
    all_sz = pa.concat_arrays([fast.size, line_sz]).take(take)
    arena, arena_offsets = arena_of(all_px, all_sz)
    price_key = np.concatenate([fast.price_key, level_keys(line_px)])[lvl_idx]
    size_key = np.concatenate([fast.size_key, level_keys(line_sz)])[lvl_idx]

    def cat(a: np.ndarray, attr: str) -> np.ndarray:
        return np.concatenate([a, [getattr(m, attr) for _, m in msgs]]).astype(a.dtype)[order]

    def opt(
        a: np.ndarray | None, values: list[Any], fill: int | bool = -1, dtype: Any = np.int64
    ) -> np.ndarray | None:
        if a is None:
            if all(v == fill for v in values):
                return None
            a = np.full(n_fast, fill, dtype)  # the default of every fast message
        return np.concatenate([a, values]).astype(a.dtype)[order]

    return FastBook(
        exchange=fast.exchange,
        symbol=fast.symbol,
        venue_symbol=fast.venue_symbol,
        channel=fast.channel,
        line=lines[order],
        ts_event=cat(fast.ts_event, "ts_event"),
        ts_recv=cat(fast.ts_recv, "ts_recv"),
        seq=cat(fast.seq, "seq"),
        is_snapshot=cat(fast.is_snapshot, "is_snapshot"),
        final_id=cat(fast.final_id, "final_id"),
        level_offsets=offsets,
        side=all_side[lvl_idx],
        arena=arena,
        arena_offsets=arena_offsets,
        price_key=price_key,
        size_key=size_key,
        first_id=opt(fast.first_id, [m.first_id for _, m in msgs]),
        prev_id=opt(fast.prev_id, [m.prev_id for _, m in msgs]),
        from_rest=opt(fast.from_rest, [m.from_rest for _, m in msgs], False, bool),
        checksum=opt(fast.checksum, [m.checksum or 0 for _, m in msgs], 0),
        has_checksum=opt(fast.has_checksum, [m.checksum is not None for _, m in msgs], False, bool),
        checksum_kind=fast.checksum_kind,
        chain=fast.chain,
        depth=fast.depth,
    )


def _part(a: np.ndarray | None, start: int, end: int) -> np.ndarray | None:
    return None if a is None else a[start:end]
