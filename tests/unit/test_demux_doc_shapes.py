"""Shapes the captures lack, built from the venues' documentation (tests/fixtures/doc_shapes.py):
the scanners take every book, trade and quote shape on the fast path, and the result equals the
per-line path's."""

from __future__ import annotations

import pytest

from fluxforge.demux import demux_segment
from tests.fixtures import doc_shapes
from tests.unit.demux_compare import assert_same, both_paths

# shapes with no scanner (none left): the per-line path would take them, with the same result
PER_LINE_SHAPES: set[tuple[str, str]] = set()


def _left_to_per_line(venue: str, line: bytes) -> bool:
    return any(v == venue and key.encode() in line for v, key in PER_LINE_SHAPES)


@pytest.mark.parametrize("venue", doc_shapes.VENUES)
def test_doc_shapes_every_book_trade_and_quote_line_takes_the_fast_path(venue: str) -> None:
    for line in doc_shapes.lines(venue):
        res = demux_segment(line, doc_shapes.SEGMENT, fast=True)
        assert res.quarantined == 0, res.quarantine.column("reason").to_pylist()
        assert res.lines_in == 1
        want = 1 if _left_to_per_line(venue, line) else 0
        assert res.per_line == want, line[:200]


@pytest.mark.parametrize("venue", [*doc_shapes.VENUES, None])
def test_doc_shapes_fast_path_equals_per_line_path(
    venue: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = doc_shapes.segment(0.05, venue)
    fast, slow = both_paths(data, monkeypatch, doc_shapes.SEGMENT)
    assert fast.lines_in > 20 and fast.quarantined == 0
    assert_same(fast, slow)
