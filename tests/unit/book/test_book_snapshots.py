"""Snapshot injection on a synthetic stream: periodic every interval of event time, sod at
each UTC date change of ts_recv, exact top-N contents."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fluxforge.book import BookEngine
from fluxforge.events import BookMessage

S = 1_000_000_000


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * S


def _stream(start: int, seconds: int, step: int = 10) -> list[BookMessage]:
    msgs = [
        BookMessage(
            "x",
            "A-B",
            "AB",
            "book",
            start,
            start + 1000,
            0,
            True,
            [("100.00", "1"), ("99.50", "2")],
            [("100.50", "3"), ("101.00", "4")],
        )
    ]
    for i, t in enumerate(range(start + step * S, start + seconds * S, step * S), 1):
        px = f"{99 + (i % 5) * 0.1:.2f}"
        msgs.append(
            BookMessage("x", "A-B", "AB", "book", t, t + 1000, i, False, [(px, str(i % 3))], [])
        )
    return msgs


def test_book_snapshots_periodic_each_interval_and_sod_at_midnight() -> None:
    start = _ns("2026-01-01T23:57:05")
    out = BookEngine("x", "A-B").apply(_stream(start, 6 * 60))
    rows = [(r["reason"], r["ts_event"]) for r in out.snapshots.to_pylist()]
    expected = [
        ("sod", start),
        ("periodic", _ns("2026-01-01T23:58:05")),
        ("periodic", _ns("2026-01-01T23:59:05")),
        ("sod", _ns("2026-01-02T00:00:05")),
        ("periodic", _ns("2026-01-02T00:01:05")),
        ("periodic", _ns("2026-01-02T00:02:05")),
    ]
    assert rows == expected
    assert out.stats.snapshots == len(expected)


def test_book_snapshot_rows_hold_top_n_best_first_exactly() -> None:
    msg = BookMessage(
        "x",
        "A-B",
        "AB",
        "book",
        5,
        5,
        9,
        True,
        [("0.00000100", "5"), ("0.00000300", "1.50"), ("0.00000200", "2")],
        [("0.00000400", "0.0000000001"), ("0.00000500", "7")],
    )
    out = BookEngine("x", "A-B", depth=2).apply([msg])
    row = out.snapshots.to_pylist()[0]
    assert row["depth"] == 2
    assert row["bid_px"] == [Decimal("0.000003"), Decimal("0.000002")]
    assert row["bid_sz"] == [Decimal("1.5"), Decimal("2")]
    assert row["ask_px"] == [Decimal("0.000004"), Decimal("0.000005")]
    assert row["ask_sz"] == [Decimal("0.0000000001"), Decimal("7")]
    assert (row["seq"], row["update_id"], row["book_epoch"]) == (9, -1, 1)
    assert out.tops == [(5, -1, "0.00000300", "1.50", "0.00000400", "0.0000000001")]


def test_book_deltas_one_row_per_level_with_epoch() -> None:
    msgs = _stream(_ns("2026-03-01T00:00:00"), 30)
    out = BookEngine("x", "A-B").apply(msgs)
    d = out.deltas.to_pylist()
    assert len(d) == 4 + (len(msgs) - 1)
    assert [r["is_snapshot"] for r in d[:5]] == [True] * 4 + [False]
    assert [r["side"] for r in d[:4]] == ["bid", "bid", "ask", "ask"]
    assert {r["book_epoch"] for r in d} == {1}
    assert d[4]["price"] == Decimal(msgs[1].bids[0][0])
