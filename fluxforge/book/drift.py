"""Book drift: the replayed book compared with a venue snapshot that arrives while the book is
still in a valid epoch (a reconnect snapshot, a re-subscription, a Binance REST re-fetch), level
by level, before the snapshot replaces it.

Rules (docs/data-guide.md, "`book_drift`"):

* compared only while the epoch is valid; for update-id chains (Binance) only when the
  snapshot's ``lastUpdateId`` equals the id the book has reached (another id describes another
  instant, so nothing could be concluded);
* per side, the levels priced at or better than the snapshot's worst level on that side (venue
  snapshots are depth-limited and levels beyond it are not maintained by the venue); a side the
  snapshot leaves empty is compared whole;
* a level differs when its size differs (a missing level has size 0); sizes and prices compare
  as decimals, so ``"0.50"`` equals ``"0.5"``.

``compare_levels`` returns the ``Drift`` of one comparison; a non-zero one becomes a
``book_drift`` row and a gap-ledger row (cause ``book_drift``). It works on whole columns:
prices and sizes as their exact decimal128(38, 18) values (two int64 words each, what the
lake stores; every level the engine holds fits, it refuses others on input), so a book of
tens of thousands of levels is compared without a Python object per level; only the levels
that differ are read back as wire text, for the largest size difference as the venue wrote
it. ``compare`` is the same rule on wire strings (tests, tools).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

CAUSE = "book_drift"
_SCALE = 18  # decimal128(38, 18): the words hold value * 10**18


@dataclass(frozen=True)
class Drift:
    levels_compared: int
    levels_differing: int
    max_size_diff: Decimal

    def detail(self) -> str:
        return (
            f"{self.levels_differing} of {self.levels_compared} levels differ from the venue "
            f"snapshot; largest size difference {self.max_size_diff}"
        )


Levels = list[tuple[str, str]]


@dataclass(frozen=True)
class SideLevels:
    """One side of a book or a snapshot, as columns: price and size as decimal128(38, 18)
    words (int64 [n, 2]: low word, high word) and the wire text of level i's size."""

    px: np.ndarray
    sz: np.ndarray
    size_text: Callable[[int], str]


def words(values: list[str]) -> np.ndarray:
    """Decimal strings -> decimal128(38, 18) words (int64 [n, 2]: low, high)."""
    out = np.zeros((len(values), 2), dtype=np.int64)
    for i, text in enumerate(values):
        scaled = int(Decimal(text).scaleb(_SCALE))
        out[i, 0] = np.uint64(scaled & 0xFFFFFFFFFFFFFFFF).view(np.int64)
        out[i, 1] = scaled >> 64
    return out


def _sort_last(px: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`idx` ordered by price (ascending), keeping the LAST level of a repeated price (a
    snapshot listing one price twice means its last entry, as a dict built from it would)."""
    if len(idx) < 2:
        return idx
    rev = idx[::-1]
    order = rev[np.lexsort((px[rev, 0].view(np.uint64), px[rev, 1]))]  # stable: last first
    keys = px[order]
    return order[np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]]


def _ints(values: np.ndarray) -> list[int]:
    """decimal128 words (int64 [n, 2]) -> the scaled values as Python ints."""
    return [
        (hi << 64) | lo
        for lo, hi in zip(values[:, 0].view(np.uint64).tolist(), values[:, 1].tolist(), strict=True)
    ]


def _at_least(px: np.ndarray, bound: np.ndarray) -> np.ndarray:
    hi, lo = px[:, 1], px[:, 0].view(np.uint64)
    return (hi > bound[1]) | ((hi == bound[1]) & (lo >= bound[0:1].view(np.uint64)[0]))


def _at_most(px: np.ndarray, bound: np.ndarray) -> np.ndarray:
    hi, lo = px[:, 1], px[:, 0].view(np.uint64)
    return (hi < bound[1]) | ((hi == bound[1]) & (lo <= bound[0:1].view(np.uint64)[0]))


def _side(book: SideLevels, snap: SideLevels, bids: bool) -> tuple[int, int, Decimal]:
    want = _sort_last(snap.px, np.flatnonzero(snap.sz.any(axis=1)))  # size 0: no level
    have = _sort_last(book.px, np.arange(len(book.px)))
    if len(want):
        # levels beyond the snapshot's worst price are not the venue's to vouch for
        worst = snap.px[want[0] if bids else want[-1]]
        inside = _at_least(book.px[have], worst) if bids else _at_most(book.px[have], worst)
        have = have[inside]
    if not len(want) and not len(have):
        return 0, 0, Decimal(0)
    px = np.concatenate([snap.px[want], book.px[have]])
    from_book = np.r_[np.zeros(len(want), bool), np.ones(len(have), bool)]
    index = np.r_[want, have]
    order = np.lexsort((px[:, 0].view(np.uint64), px[:, 1]))
    keys = px[order]
    same_as_next = np.r_[(keys[1:] == keys[:-1]).all(axis=1), False]
    paired = same_as_next | np.r_[False, same_as_next[:-1]]
    prices = len(order) - int(same_as_next.sum())
    # a price on both sides differs when the sizes do; a price on one side, when its size is
    # not 0 (the other side's size counts as 0)
    sizes = np.concatenate([snap.sz[want], book.sz[have]])[order]
    first = np.flatnonzero(same_as_next)
    pair_differs = (sizes[first] != sizes[first + 1]).any(axis=1)
    lone = np.flatnonzero(~paired)
    lone = lone[sizes[lone].any(axis=1)]

    def text(pos: int) -> Decimal:
        k = order[pos]
        level = int(index[k])
        return Decimal(book.size_text(level) if from_book[k] else snap.size_text(level))

    pairs = first[pair_differs]
    # the largest difference found on the exact integers, then written from the wire text
    # of its two sizes (a Decimal keeps the venue's digits: "2141.49", not 2141490...000)
    gaps = [abs(x - y) for x, y in zip(_ints(sizes[pairs]), _ints(sizes[pairs + 1]), strict=True)]
    gaps += _ints(sizes[lone])
    differing = len(gaps)
    if not differing:
        return prices, 0, Decimal(0)
    best = max(range(differing), key=gaps.__getitem__)
    if best < len(pairs):
        got = {bool(from_book[order[p]]): text(p) for p in (pairs[best], pairs[best] + 1)}
        return prices, differing, abs(got[False] - got[True])
    pos = lone[best - len(pairs)]
    zero, size = Decimal(0), text(pos)
    return prices, differing, abs(zero - size) if from_book[order[pos]] else abs(size - zero)


def compare_levels(
    book: tuple[SideLevels, SideLevels], snapshot: tuple[SideLevels, SideLevels]
) -> Drift:
    """Book (bids, asks) against a venue snapshot (bids, asks), as columns."""
    nb, db, mb = _side(book[0], snapshot[0], bids=True)
    na, da, ma = _side(book[1], snapshot[1], bids=False)
    return Drift(nb + na, db + da, max(mb, ma))


def side_levels(levels: Levels) -> SideLevels:
    """One side given as (price, size) wire strings."""
    return SideLevels(
        words([px for px, _ in levels]), words([sz for _, sz in levels]), lambda i: levels[i][1]
    )


def compare(book: tuple[Levels, Levels], snapshot: tuple[Levels, Levels]) -> Drift:
    """Book (bids, asks) against a venue snapshot (bids, asks), wire strings."""
    return compare_levels(
        (side_levels(book[0]), side_levels(book[1])),
        (side_levels(snapshot[0]), side_levels(snapshot[1])),
    )
