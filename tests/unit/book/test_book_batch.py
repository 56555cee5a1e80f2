"""The columnar entry point (demux, benchmark) gives the same output as BookMessages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fluxforge.book import BookBatch, BookEngine
from fluxforge.events import BookMessage


def test_book_batch_from_columns_equals_from_messages() -> None:
    msgs = [
        BookMessage(
            "x",
            "A-B",
            "AB",
            "book",
            10,
            11,
            1,
            True,
            [("10.5", "1"), ("10.0", "2")],
            [("11.0", "3")],
        ),
        BookMessage("x", "A-B", "AB", "book", 20, 21, 2, False, [("10.5", "0")], [("10.9", "4")]),
        BookMessage("x", "A-B", "AB", "book", 30, 31, 3, False, [], [("11.0", "0.000")]),
    ]
    batch = BookBatch.from_columns(
        ts_event=np.array([10, 20, 30]),
        ts_recv=np.array([11, 21, 31]),
        seq=np.array([1, 2, 3]),
        level_offsets=np.array([0, 3, 5, 6]),
        side=np.array([0, 0, 1, 0, 1, 1]),
        price_strings=pa.array(["10.5", "10.0", "11.0", "10.5", "10.9", "11.0"]),
        size_strings=pa.array(["1", "2", "3", "0", "4", "0.000"]),
        is_snapshot=np.array([True, False, False]),
        venue_symbol="AB",
        channel="book",
    )
    a = BookEngine("x", "A-B").apply(msgs)
    b = BookEngine("x", "A-B").apply_batch(batch)
    assert a.deltas.equals(b.deltas)
    assert a.snapshots.equals(b.snapshots)
    assert a.tops == b.tops
    assert a.tops[-1] == (31, -1, "10.0", "2", "10.9", "4")


def test_book_decimal_parser_equals_arrow_cast() -> None:
    from fluxforge.book.engine import _decimal_column
    from fluxforge.tables import DECIMAL

    strings = [
        "0", "0.0", "1", "12.34", "0.00000100", "100", ".5", "7.", "123456789012345678",
        "1234567890123456789", "99999999999999999999.123456789012345678",
        "0.000000000000000001", "18446744073709551616", "4294967296.000000001",
    ]  # fmt: skip
    arr = pa.array(strings, pa.large_string())
    _, offs, data = arr.buffers()
    arenas = (
        0,
        np.zeros(0, np.uint8),
        np.zeros(1, np.int64),
        np.frombuffer(data, np.uint8),
        np.frombuffer(offs, np.int64)[: len(strings) + 1],
    )
    got = _decimal_column(np.arange(len(strings)), arenas)
    assert got.equals(arr.cast(DECIMAL))
    with pytest.raises(pa.ArrowInvalid):  # 1e20 needs 39 digits: Arrow names the problem
        _decimal_column(np.arange(1), (0, *arenas[1:3], *_arena("100000000000000000000")))


def _arena(text: str) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(text.encode(), np.uint8), np.array([0, len(text)], np.int64)
