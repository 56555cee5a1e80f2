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

``compare`` returns the ``Drift`` of one comparison; a non-zero one becomes a ``book_drift``
row and a gap-ledger row (cause ``book_drift``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CAUSE = "book_drift"


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


def _side(book: Levels, snap: Levels, bids: bool) -> tuple[int, int, Decimal]:
    want = {Decimal(px): Decimal(sz) for px, sz in snap if Decimal(sz) != 0}
    have = {Decimal(px): Decimal(sz) for px, sz in book}
    if want:
        worst = min(want) if bids else max(want)
        have = {px: sz for px, sz in have.items() if (px >= worst if bids else px <= worst)}
    prices = set(want) | set(have)
    diffs = [abs(want.get(px, Decimal(0)) - have.get(px, Decimal(0))) for px in prices]
    differing = [d for d in diffs if d != 0]
    return len(prices), len(differing), max(differing, default=Decimal(0))


def compare(book: tuple[Levels, Levels], snapshot: tuple[Levels, Levels]) -> Drift:
    """Book (bids, asks) against a venue snapshot (bids, asks), wire strings."""
    nb, db, mb = _side(book[0], snapshot[0], bids=True)
    na, da, ma = _side(book[1], snapshot[1], bids=False)
    return Drift(nb + na, db + da, max(mb, ma))
