"""Book drift: the replayed book compared with a venue snapshot that arrives while the book is
still in a valid epoch (a reconnect snapshot, a re-subscription, a Binance REST re-fetch), level
by level, before the snapshot replaces it.

Rules (docs/data-guide.md, "`book_drift`"):

* compared only while the epoch is valid; for update-id chains (Binance) only when the
  snapshot's ``lastUpdateId`` equals the id the book has reached (another id describes another
  instant, so nothing could be concluded); without a chain only when updates were applied
  since the previous snapshot (consecutive pushes of a partial-depth stream are two instants,
  not a replay to check: the kernel state ``S_UPDATED``);
* per side, the levels priced at or better than the snapshot's worst level on that side (venue
  snapshots are depth-limited and levels beyond it are not maintained by the venue); a side the
  snapshot leaves empty is compared whole;
* a level differs when its size differs (a missing level has size 0); sizes and prices compare
  as decimals, so ``"0.50"`` equals ``"0.5"``.

``compare_side`` is one side's rule in numba; the book kernel calls it at each compared
snapshot (``kernel._drift_check``), and a difference becomes a ``book_drift`` row and a
gap-ledger row (cause ``book_drift``). ``compare_levels`` gives the ``Drift`` of one
comparison from columns (``SideLevels``). Both work on whole columns:
prices and sizes as their exact values in the lake's decimal128(38, 12) (two int64 words
each, what the lake stores; every level the engine holds fits, it refuses others on input),
so a book of tens of thousands of levels is compared without a Python object per level; only
the levels that differ are read back as wire text, for the largest size difference as the
venue wrote it. ``compare`` is the same rule on wire strings (tests, tools).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numba import njit

from fluxforge.tables import DECIMAL

CAUSE = "book_drift"
_SCALE = DECIMAL.scale  # the words hold value * 10**scale


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
    """One side of a book or a snapshot, as columns: price and size as the lake's decimal
    words (int64 [n, 2]: low word, high word) and the wire text of level i's size."""

    px: np.ndarray
    sz: np.ndarray
    size_text: Callable[[int], str]


def words(values: list[str]) -> np.ndarray:
    """Decimal strings -> the lake's decimal words (int64 [n, 2]: low, high)."""
    out = np.zeros((len(values), 2), dtype=np.int64)
    for i, text in enumerate(values):
        scaled = int(Decimal(text).scaleb(_SCALE))
        out[i, 0] = np.uint64(scaled & 0xFFFFFFFFFFFFFFFF).view(np.int64)
        out[i, 1] = scaled >> 64
    return out


@njit(cache=True)
def below(ahi, alo, bhi, blo):
    """(ahi, alo) < (bhi, blo): a decimal word pair, high word signed, low word unsigned."""
    return ahi < bhi or (ahi == bhi and np.uint64(alo) < np.uint64(blo))


@njit(cache=True)
def _ascending_last(px, idx):
    """`idx` ordered by price (ascending), keeping the LAST level of a repeated price (a
    snapshot listing one price twice means its last entry, as a dict built from it would).
    Levels already in strictly ascending order (a book side) are returned as they are."""
    n = len(idx)
    ordered = True
    for k in range(1, n):
        if not below(px[idx[k - 1], 1], px[idx[k - 1], 0], px[idx[k], 1], px[idx[k], 0]):
            ordered = False
            break
    if ordered:
        return idx
    rev = idx[::-1].copy()  # the last entry of a price first, through two stable sorts
    lo = np.empty(n, np.uint64)
    for k in range(n):
        lo[k] = np.uint64(px[rev[k], 0])
    rev = rev[np.argsort(lo, kind="mergesort")]
    hi = np.empty(n, np.int64)
    for k in range(n):
        hi[k] = px[rev[k], 1]
    rev = rev[np.argsort(hi, kind="mergesort")]
    out = np.empty(n, np.int64)
    m = 0
    for k in range(n):
        if k == 0 or px[rev[k], 0] != px[rev[k - 1], 0] or px[rev[k], 1] != px[rev[k - 1], 1]:
            out[m] = rev[k]
            m += 1
    return out[:m]


@njit(cache=True)
def compare_side(w_px, w_sz, h_px, h_sz, bids):
    """One side's rule: snapshot levels (price, size words) against the book's: (prices
    compared, levels differing, snapshot and book level of the largest size difference, -1
    where that price is absent on one side, and that difference as words: high, low). Levels
    of size 0 in the snapshot are no level. Called by the book kernel at each compared
    snapshot, and by ``compare_levels``."""
    live = np.empty(len(w_px), np.int64)
    nw = 0
    for k in range(len(w_px)):
        if w_sz[k, 0] != 0 or w_sz[k, 1] != 0:
            live[nw] = k
            nw += 1
    want = _ascending_last(w_px, live[:nw])
    have = _ascending_last(h_px, np.arange(len(h_px)))
    nw, nh = len(want), len(have)
    h0, h1 = 0, nh
    if nw:
        # the snapshot's worst price bounds the book levels compared
        if bids:
            w = want[0]
            while h0 < nh and below(h_px[have[h0], 1], h_px[have[h0], 0], w_px[w, 1], w_px[w, 0]):
                h0 += 1
        else:
            w = want[nw - 1]
            while h1 > h0 and below(
                w_px[w, 1], w_px[w, 0], h_px[have[h1 - 1], 1], h_px[have[h1 - 1], 0]
            ):
                h1 -= 1
    i, j = 0, h0
    prices = 0
    differing = 0
    best_hi, best_lo = np.int64(-1), np.int64(0)
    best_i, best_j = -1, -1
    while i < nw or j < h1:
        wi = want[min(i, nw - 1)] if nw else 0
        hj = have[min(j, h1 - 1)] if h1 > 0 else 0
        take_w = j >= h1 or (
            i < nw and not below(h_px[hj, 1], h_px[hj, 0], w_px[wi, 1], w_px[wi, 0])
        )
        take_h = i >= nw or (
            j < h1 and not below(w_px[wi, 1], w_px[wi, 0], h_px[hj, 1], h_px[hj, 0])
        )
        prices += 1
        # sizes of the two sides at this price (absent: 0)
        a_hi, a_lo = (w_sz[wi, 1], w_sz[wi, 0]) if take_w else (np.int64(0), np.int64(0))
        b_hi, b_lo = (h_sz[hj, 1], h_sz[hj, 0]) if take_h else (np.int64(0), np.int64(0))
        if a_hi != b_hi or a_lo != b_lo:
            differing += 1
            if below(a_hi, a_lo, b_hi, b_lo):
                a_hi, a_lo, b_hi, b_lo = b_hi, b_lo, a_hi, a_lo
            d_lo = np.int64(np.uint64(a_lo) - np.uint64(b_lo))
            d_hi = a_hi - b_hi - (1 if np.uint64(a_lo) < np.uint64(b_lo) else 0)
            if below(best_hi, best_lo, d_hi, d_lo):
                best_hi, best_lo = d_hi, d_lo
                best_i = wi if take_w else -1
                best_j = hj if take_h else -1
        i += 1 if take_w else 0
        j += 1 if take_h else 0
    return prices, differing, best_i, best_j, best_hi, best_lo


def _side(book: SideLevels, snap: SideLevels, bids: bool) -> tuple[int, int, Decimal]:
    prices, differing, i, j, _, _ = compare_side(snap.px, snap.sz, book.px, book.sz, bids)
    if not differing:
        return prices, 0, Decimal(0)
    # the largest difference, written from the wire text of its sizes (a Decimal keeps the
    # venue's digits: "2141.49"); an absent size is 0
    want_size = Decimal(snap.size_text(int(i))) if i >= 0 else Decimal(0)
    have_size = Decimal(book.size_text(int(j))) if j >= 0 else Decimal(0)
    return prices, differing, abs(want_size - have_size)


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
