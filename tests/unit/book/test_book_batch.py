"""The columnar entry point (demux, benchmark) gives the same output as BookMessages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fluxforge.book import BookBatch, BookEngine, BookInputError
from fluxforge.book import kernel as K
from fluxforge.events import BookMessage
from fluxforge.wire.decimal import SCALE_LIMITS


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
        "1234567890123456789", "99999999999999999999999999.123456789012",
        "0.000000000001", "18446744073709551616", "4294967296.000000001",
        # zeros past the 12th decimal: venue padding, the same number
        "0.10000000000000000000", "7.123456789012000000", "1.0000000000000000000000000000000",
        # around the largest value whose scaled form fits one signed word
        "9223372.036854775", "9223372.036854776", "9223372.036854775807", "9223373",
        "922337203685477.5807", "0.000000000009", "999999999999999999",
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
    ok = K.decimals(np.arange(len(strings)), *arenas, DECIMAL.scale, 26)[1]
    assert ok  # all taken by the numba parser, none left to Arrow
    got = _decimal_column(np.arange(len(strings)), arenas)
    assert got.equals(arr.cast(DECIMAL))
    # 1e26 needs 27 integer digits; a non-zero 13th decimal cannot be kept exactly
    for bad in ("100000000000000000000000000", "0.1000000000001"):
        with pytest.raises(BookInputError, match=rf"{bad!r} does not fit decimal\(38, 12\)"):
            _decimal_column(np.arange(1), (0, *arenas[1:3], *_arena(bad)))


def _arena(text: str) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(text.encode(), np.uint8), np.array([0, len(text)], np.int64)


def test_book_batch_slice_equals_take_of_the_same_range() -> None:
    rng = np.random.default_rng(7)
    n = 40
    counts = rng.integers(0, 5, n)
    offsets = np.r_[0, np.cumsum(counts)]
    levels = int(offsets[-1])
    batch = BookBatch.from_columns(
        ts_event=np.arange(n) * 10,
        ts_recv=np.arange(n) * 10 + 1,
        seq=np.arange(n),
        level_offsets=offsets,
        side=rng.integers(0, 2, levels),
        price_strings=pa.array([f"{rng.integers(1, 10**6) / 100}" for _ in range(levels)]),
        size_strings=pa.array(
            [f"{rng.integers(0, 999)}.{'0' * int(rng.integers(0, 4))}" for _ in range(levels)]
        ),
        is_snapshot=rng.random(n) < 0.2,
        venue_symbol="AB",
        channel="book",
    )
    for lo, hi in [(0, n), (0, 1), (5, 6), (3, 17), (n - 1, n), (7, 7)]:
        a, b = batch.slice(lo, hi), batch.take(np.arange(lo, hi))
        assert a.to_columns_dict() == b.to_columns_dict(), (lo, hi)
        assert a.strings("price").equals(b.strings("price"))
        assert a.strings("size").equals(b.strings("size"))
        assert np.array_equal(a.arena_offsets, b.arena_offsets) and np.array_equal(a.arena, b.arena)


def _words(batch: BookBatch) -> np.ndarray:
    """The lake decimals of `batch`'s prices then sizes, parsed from its strings."""
    ids = np.arange(2 * batch.n_levels)
    words, ok = K.decimals(ids, 0, *_arena(""), batch.arena, batch.arena_offsets, *SCALE_LIMITS)
    assert ok
    return words


def test_book_batch_words_follow_take_slice_and_concat() -> None:
    """The decimals a scan read (``BookBatch.words``) stay those of the batch's own strings
    through every reshaping the engine does (the pre-snapshot buffer: take, then concat with
    the next batch; large batches: slice); a batch without them gives none."""
    rng = np.random.default_rng(3)

    def make(n: int, with_words: bool) -> BookBatch:
        counts = rng.integers(0, 5, n)
        levels = int(counts.sum())
        b = BookBatch.from_columns(
            ts_event=np.arange(n),
            ts_recv=np.arange(n),
            level_offsets=np.r_[0, np.cumsum(counts)],
            side=rng.integers(0, 2, levels),
            price_strings=pa.array([f"{rng.integers(1, 10**7) / 1000}" for _ in range(levels)]),
            size_strings=pa.array([f"0.{rng.integers(0, 10**8):08d}" for _ in range(levels)]),
            venue_symbol="AB",
            channel="book",
        )
        if with_words:
            b.words = _words(b)
        return b

    a, b = make(30, True), make(20, True)
    for got in [a.take(np.array([3, 1, 29, 7])), a.slice(4, 19), BookBatch.concat([a, b])]:
        assert got.words is not None
        assert np.array_equal(got.words, _words(got))
    assert BookBatch.concat([a, make(5, False)]).words is None
    assert make(5, False).take(np.array([0, 2])).words is None


def test_book_deltas_side_and_venue_symbol_columns_are_plain_strings_row_by_row() -> None:
    msgs = [
        BookMessage("x", "A-B", "AB", "book", 10, 11, 1, True, [("10", "1")], [("11", "2")]),
        BookMessage("x", "A-B", "AB", "book", 20, 21, 2, False, [], [("12", "1"), ("11", "0")]),
        BookMessage("x", "A-B", "AB", "book", 30, 31, 3, False, [("9", "4")], []),
    ]
    deltas = BookEngine("x", "A-B").apply(msgs).deltas
    assert deltas.schema.field("side").type == pa.string()
    assert deltas.column("side").to_pylist() == ["bid", "ask", "ask", "ask", "bid"]
    assert deltas.column("venue_symbol").to_pylist() == ["AB"] * 5
    deltas.validate(full=True)


@pytest.mark.parametrize("names", [("AB", "CD"), ("AB", "CDE"), ("ABCD", "EFGH", "IJKL")])
def test_book_deltas_venue_symbol_column_of_several_names_row_by_row(names: tuple) -> None:
    """Several venue names in one batch: built from bytes when they share a width (any
    width), through a dictionary when they do not; the same strings row by row."""
    msgs = [
        BookMessage("x", "A-B", names[i % len(names)], "book", i, i + 1, i, i == 0, bids, [])
        for i, bids in enumerate([[("10", "1"), ("9", "2")], [("10", "3")], [("8", "1")]] * 3)
    ]
    deltas = BookEngine("x", "A-B").apply(msgs).deltas
    want = [names[i % len(names)] for i in range(len(msgs)) for _ in msgs[i].bids]
    assert deltas.column("venue_symbol").to_pylist() == want
    assert deltas.column("side").to_pylist() == ["bid"] * len(want)
    deltas.validate(full=True)


def test_pooled_strings_read_from_both_arenas_in_any_order() -> None:
    """Ids below n0 read the book's arena, the others the batch's, in runs or interleaved:
    decimals and gathered bytes equal those of each string read on its own."""
    from fluxforge.tables import DECIMAL

    book = ["1.5", "0.25", "30000.1", "7"]
    batch = ["2", "0.000001", "123456789.123456789", "4.50", "99"]
    n0 = len(book)
    arenas = (n0, *_arena_of(book), *_arena_of(batch))
    values = book + batch
    rng = np.random.default_rng(5)
    orders = [np.arange(len(values)), np.array([5, 0, 6, 1, 8, 2, 7, 3, 4])]
    orders += [rng.integers(0, len(values), 40) for _ in range(20)]
    for ids in orders:
        words, ok = K.decimals(ids.astype(np.int64), *arenas, DECIMAL.scale, 26)
        assert ok
        got = pa.Array.from_buffers(DECIMAL, len(ids), [None, pa.py_buffer(words)])
        assert got.equals(pa.array([values[i] for i in ids]).cast(DECIMAL))
        with_empty = np.concatenate([[-1], ids, [-1]]).astype(np.int64)
        data, offs = K.gather(with_empty, *arenas)
        texts = pa.LargeStringArray.from_buffers(
            len(with_empty), pa.py_buffer(offs), pa.py_buffer(data)
        )
        assert texts.to_pylist() == ["", *(values[i] for i in ids), ""]


def _arena_of(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    arr = pa.array(strings, pa.large_string())
    _, offs, data = arr.buffers()
    return np.frombuffer(data, np.uint8), np.frombuffer(offs, np.int64)[: len(strings) + 1]
