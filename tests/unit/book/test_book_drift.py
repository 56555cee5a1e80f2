"""Book drift: a venue snapshot arriving in a valid epoch is compared with the replayed book
before it replaces it (fluxforge/book/drift.py, BookEngine.apply_batch)."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from fluxforge.book import BookBatch, BookEngine
from fluxforge.book.drift import compare
from fluxforge.events import CHAIN_BINANCE_FUTURES, BookMessage

S = 1_000_000_000


def msg(
    seq: int,
    snap: bool,
    bids: list,
    asks: list,
    *,
    final: int = -1,
    prev: int = -1,
    first: int | None = None,
    **kw,
) -> BookMessage:
    return BookMessage(
        "coinbase" if "chain" not in kw else "binanceusdm",
        "BTC-USD",
        "BTC-USD",
        "level2",
        seq * S,
        seq * S + 5,
        seq,
        snap,
        bids,
        asks,
        first_id=final if first is None else first,
        final_id=final,
        prev_id=prev,
        **kw,
    )


def stream(second: list[tuple[str, str]]) -> list[BookMessage]:
    return [
        msg(1, True, [("100", "1"), ("99", "2"), ("98", "3")], [("101", "1"), ("102", "2")]),
        msg(2, False, [("99", "5")], []),
        msg(3, False, [], [("101", "0"), ("103", "4")]),
        msg(4, True, second, [("102", "2.0"), ("103", "4")]),
        msg(5, False, [("100", "7")], []),
    ]


def test_book_drift_equal_snapshot_in_valid_epoch_writes_no_row() -> None:
    engine = BookEngine("coinbase", "BTC-USD")
    out = engine.apply(stream([("100", "1"), ("99", "5"), ("98", "3")]))
    assert out.drift.num_rows == 0 and out.gaps.num_rows == 0
    assert out.stats.drift_checks == 1 and out.stats.drifts == 0
    # an equal snapshot goes on in the epoch: no resync snapshot row after it
    assert engine.book_epoch == 1 and set(out.deltas["book_epoch"].to_pylist()) == {1}
    assert out.snapshots["reason"].to_pylist() == ["sod"]


def test_book_drift_differing_snapshot_writes_drift_and_gap_rows() -> None:
    engine = BookEngine("coinbase", "BTC-USD")
    out = engine.apply(stream([("100", "1"), ("99", "2"), ("97", "1")]))
    assert out.stats.drift_checks == 1 and out.stats.drifts == 1
    (row,) = out.drift.to_pylist()
    # 99: 5 vs 2; 98: 3 vs missing; 97: missing vs 1 (within the snapshot's range)
    assert row["levels_differing"] == 3 and row["max_size_diff"] == Decimal(3)
    assert row["book_epoch"] == 1 and row["integrity"] == "none" and row["seq"] == 4
    (gap,) = out.gaps.to_pylist()
    assert gap["cause"] == "book_drift" and gap["book_epoch"] == 1 and gap["ts_to"] == 4 * S + 5
    assert engine.book_epoch == 2 and engine.valid


def test_book_drift_pieces_give_the_rows_of_message_by_message_applies() -> None:
    msgs = stream([("100", "1"), ("99", "2")])
    whole = BookEngine("coinbase", "BTC-USD").apply(msgs)
    one = BookEngine("coinbase", "BTC-USD")
    outs = [one.apply([m]) for m in msgs]
    for name in ("deltas", "snapshots", "gaps", "drift"):
        assert getattr(whole, name).equals(pa.concat_tables([getattr(o, name) for o in outs]))
    assert whole.tops == [t for o in outs for t in o.tops]


def test_book_drift_not_compared_before_the_first_snapshot_or_after_a_gap() -> None:
    engine = BookEngine("coinbase", "BTC-USD")
    out = engine.apply(stream([("1", "1")])[:1])
    assert out.stats.drift_checks == 0
    engine.reconnect(2 * S)
    out = engine.apply([msg(3, True, [("5", "5")], [])])
    assert out.stats.drift_checks == 0 and out.drift.num_rows == 0


def test_book_drift_chain_compared_only_at_the_same_update_id() -> None:
    chain = {"chain": CHAIN_BINANCE_FUTURES, "from_rest": True}
    base = [
        msg(1, True, [("10", "1")], [("11", "1")], final=100, **chain),
        msg(2, False, [("10", "2")], [], first=98, final=105, prev=97, **chain),
        msg(3, False, [("9", "1")], [], first=106, final=110, prev=105, **chain),
    ]
    equal = BookEngine("binanceusdm", "BTC-USD")
    snap = msg(4, True, [("10", "2"), ("9", "1")], [("11", "1")], final=110, **chain)
    out = equal.apply([*base, snap])
    assert out.stats.drift_checks == 1 and out.drift.num_rows == 0
    assert out.stats.stale_rest_snapshots == 1 and equal.book_epoch == 1  # kept, not rebuilt
    same = BookEngine("binanceusdm", "BTC-USD")
    snap = msg(4, True, [("10", "2"), ("9", "3")], [("11", "1")], final=110, **chain)
    after = msg(5, False, [("8", "1")], [], first=111, final=112, prev=110, **chain)
    out = same.apply([*base, snap, after])
    assert out.stats.drift_checks == 1 and out.drift.num_rows == 1  # 9: 1 vs 3
    assert out.drift.to_pylist()[0]["integrity"] == "chain"
    # rebuilt from the snapshot, and the chain goes on from its id without a break
    assert same.book_epoch == 2 and same.valid and out.stats.chain_breaks == 0
    assert [g["cause"] for g in out.gaps.to_pylist()] == ["book_drift"]
    assert same.levels() == ([("10", "2"), ("9", "3"), ("8", "1")], [("11", "1")])
    ahead = BookEngine("binanceusdm", "BTC-USD")
    out = ahead.apply([*base, msg(4, True, [("10", "7")], [("11", "1")], final=120, **chain)])
    assert out.stats.drift_checks == 0 and out.drift.num_rows == 0


def test_book_drift_compare_limits_to_the_snapshot_range_and_reads_decimals() -> None:
    book = ([("100", "1.0"), ("99", "2"), ("50", "9")], [("101", "1"), ("150", "3")])
    snap = ([("100", "1"), ("99.00", "2")], [("101", "1.000")])
    found = compare(book, snap)
    assert found.levels_differing == 0 and found.levels_compared == 3
    found = compare(book, ([("100", "1")], []))  # empty ask side: all book asks compared
    assert found.levels_differing == 2 and found.max_size_diff == Decimal(3)


def _oracle_side(book: list, snap: list, bids: bool) -> tuple[int, int, Decimal]:
    """The drift rule written plainly with Decimals, level by level (the columnar compare
    must give the same counts and the same largest difference)."""
    want = {Decimal(px): Decimal(sz) for px, sz in snap if Decimal(sz) != 0}
    have = {Decimal(px): Decimal(sz) for px, sz in book}
    if want:
        worst = min(want) if bids else max(want)
        have = {px: sz for px, sz in have.items() if (px >= worst if bids else px <= worst)}
    prices = set(want) | set(have)
    diffs = [abs(want.get(px, Decimal(0)) - have.get(px, Decimal(0))) for px in prices]
    differing = [d for d in diffs if d != 0]
    return len(prices), len(differing), max(differing, default=Decimal(0))


# prices near 100; near 10**8, where the decimal words (value * 10**12) use the high word;
# and across 2**63 / 10**12, where the low word's top bit flips (an unsigned compare)
@pytest.mark.parametrize("magnitude", [1, 10**6, 92_234])
def test_book_drift_columnar_compare_matches_the_plain_decimal_rule_on_random_books(
    magnitude: int,
) -> None:
    import random

    rng = random.Random(11)

    def text(value: Decimal) -> str:
        # the same value written as venues do: trailing zeros, or none
        return rng.choice([str(value), f"{value:.8f}", f"{value:f}"])

    def side(n: int, base: int, step: int) -> list[tuple[str, str]]:
        prices = sorted(
            {Decimal(base + step * rng.randrange(60)) * magnitude / 100 for _ in range(n)}
        )
        return [(text(p), text(Decimal(rng.randrange(0, 5)) / 4)) for p in prices]

    for _ in range(300):
        book = (side(rng.randrange(0, 40), 10_000, -1), side(rng.randrange(0, 40), 10_001, 1))
        book = tuple([(p, s) for p, s in lv if Decimal(s) != 0] for lv in book)  # live levels
        snap = (side(rng.randrange(0, 30), 10_000, -1), side(rng.randrange(0, 30), 10_001, 1))
        if rng.random() < 0.3:  # the snapshot is mostly the book itself
            snap = (book[0][: rng.randrange(0, 40)], book[1][: rng.randrange(0, 40)])
        if rng.random() < 0.2 and snap[0]:  # a price listed twice: its last entry counts
            snap = ([*snap[0], (snap[0][0][0], "7")], snap[1])
        if rng.random() < 0.3:  # levels in any order: best first, or shuffled
            snap = tuple(rng.sample(lv, len(lv)) for lv in snap)
            book = (book[0][::-1], book[1])
        found = compare(book, snap)  # type: ignore[arg-type]
        nb, db, mb = _oracle_side(book[0], snap[0], True)
        na, da, ma = _oracle_side(book[1], snap[1], False)
        assert (found.levels_compared, found.levels_differing) == (nb + na, db + da)
        assert found.max_size_diff == max(mb, ma)


@pytest.mark.parametrize("batch_levels", [1 << 20, 7])
def test_book_snapshot_heavy_batch_gives_the_rows_of_message_by_message_applies(
    batch_levels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream with a snapshot every few messages (the drift compared inside the kernel):
    one batch, applied whole or in slices of a few levels (a batch too large for one go),
    equals one apply per message."""
    import random

    from fluxforge.book import engine

    monkeypatch.setattr(engine, "BATCH_LEVELS", batch_levels)

    rng = random.Random(5)
    msgs = []
    for i in range(1, 120):
        levels = [(str(100 + rng.randrange(-5, 5)), str(rng.randrange(0, 4))) for _ in range(3)]
        bids = [(p, s) for p, s in levels if int(p) < 100]
        asks = [(p, s) for p, s in levels if int(p) >= 100]
        snap = i % 3 == 1
        if snap:
            bids = [(p, s) for p, s in dict(bids).items() if s != "0"]
            asks = [(p, s) for p, s in dict(asks).items() if s != "0"]
        msgs.append(msg(i, snap, bids, asks))
    whole = BookEngine("coinbase", "BTC-USD").apply(msgs)
    one = BookEngine("coinbase", "BTC-USD")
    outs = [one.apply([m]) for m in msgs]
    assert whole.deltas.num_rows > 100 and whole.stats.drift_checks > 10
    for name in ("deltas", "snapshots", "gaps", "drift"):
        assert getattr(whole, name).equals(pa.concat_tables([getattr(o, name) for o in outs]))
    assert whole.tops == [t for o in outs for t in o.tops]
    # without tables the drift check parses the strings it compares itself: the same rows
    bare = BookEngine("coinbase", "BTC-USD")
    bare_outs = [bare.apply_batch(BookBatch.from_messages([m]), tables=False) for m in msgs]
    assert sum(o.stats.drifts for o in bare_outs) == whole.stats.drifts > 0
    for name in ("gaps", "drift"):
        got = pa.concat_tables([getattr(o, name) for o in bare_outs])
        assert got.equals(getattr(whole, name))


def test_partial_depth_pushes_are_not_compared_with_each_other() -> None:
    """A partial-depth stream (a whole top N every push, no updates: Binance ``@depth20``,
    OKX ``books5``) has no replayed book: consecutive pushes that differ are the market
    moving, not drift. Each push still rebuilds the book and writes its rows."""
    pushes = [
        msg(1, True, [("100", "1"), ("99", "2")], [("101", "1")], depth=5),
        msg(2, True, [("100", "3"), ("99", "2")], [("101", "1")], depth=5),
        msg(3, True, [("100", "3"), ("98", "2")], [("102", "1")], depth=5),
    ]
    for batches in ([pushes], [[m] for m in pushes]):
        engine = BookEngine("coinbase", "BTC-USD")
        outs = [engine.apply(b) for b in batches]
        assert sum(o.stats.drift_checks for o in outs) == 0
        assert sum(o.drift.num_rows + o.gaps.num_rows for o in outs) == 0
        assert sum(o.deltas.num_rows for o in outs) == 9
        assert engine.levels() == ([("100", "3"), ("98", "2")], [("102", "1")])
        # no gap between pushes: one epoch, and only the first push's snapshot row
        epochs = {e for o in outs for e in o.deltas["book_epoch"].to_pylist()}
        assert epochs == {1} and engine.book_epoch == 1
        assert sum(o.snapshots.num_rows for o in outs) == 1


def test_snapshot_after_updates_is_compared_across_batches_and_checkpoints() -> None:
    """Whether updates followed the last snapshot is part of the engine's state: a snapshot
    in the next batch (or after a checkpoint) is compared when updates came before it, not
    when the book is still the previous snapshot."""
    first = [msg(1, True, [("100", "1")], [("101", "1")]), msg(2, False, [("100", "2")], [])]
    differing = [msg(3, True, [("100", "9")], [("101", "1")])]
    engine = BookEngine("coinbase", "BTC-USD")
    engine.apply(first)
    restored = BookEngine("coinbase", "BTC-USD", state=engine.state())
    for e in (engine, restored):
        out = e.apply(differing)
        assert (out.stats.drift_checks, out.drift.num_rows) == (1, 1)
    # right after a snapshot (no update since), the next one is not compared
    again = BookEngine("coinbase", "BTC-USD", state=restored.state())
    out = again.apply([msg(4, True, [("100", "5")], [("101", "1")])])
    assert (out.stats.drift_checks, out.drift.num_rows, out.gaps.num_rows) == (0, 0, 0)
