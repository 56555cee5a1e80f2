"""The Kraken v1 book payload, declared once (``venues.kraken.BOOK_PAYLOAD``): the per-line
reader (``read_fields``) and the byte scanner (``bytescan.flat_object``) read the documented
payloads to the same levels, latest level time and checksum, and refuse the same broken
ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from fluxforge.demux.bytescan import LV_COLS, flat_object
from fluxforge.events import NormalizeError
from fluxforge.venues import kraken
from fluxforge.venues.common import read_fields
from tests.fixtures import doc_shapes

LAYOUT = {"snapshot_asks": 0, "snapshot_bids": 1, "asks": 2, "bids": 3, "checksum": 4}
SIDE = {0: "bid", 1: "ask"}


def scan(obj: Any) -> dict[str, Any] | None:
    """The payload read by the scanner, as ``read_fields`` gives it; None: left to the
    per-line path."""
    buf = np.frombuffer(orjson.dumps(obj), np.uint8)
    out = np.zeros(len(LAYOUT), np.int64)
    lv = np.empty((64, LV_COLS), np.int64)
    args = kraken.BOOK_PAYLOAD.args_for(LAYOUT)
    p, seen, lv, n_lv = flat_object(buf, 0, len(buf), args, out, 0, lv, 0)
    if p != len(buf):
        return None
    got: dict[str, Any] = {}
    rows = [
        (SIDE[int(r[1])], bytes(buf[r[2] : r[3]]).decode(), bytes(buf[r[4] : r[5]]).decode())
        for r in lv[:n_lv]
    ]
    decl = kraken.BOOK_PAYLOAD
    for k, (key, col) in enumerate(zip(decl.names, decl.columns, strict=True)):
        if not seen & (1 << k):
            continue
        if col == "checksum":
            got[col] = int(out[LAYOUT[col]])
            continue
        side = dict(kraken.BOOK_LEVEL_COLUMNS)[col]
        # the rows of this key: levels of its side, in order (one key per side in a payload)
        got[col] = ([(px, sz) for sd, px, sz in rows if sd == side], int(out[LAYOUT[col]]))
        assert key in obj
    return got


def _payloads() -> list[Any]:
    out = []
    for _ex, _kind, d, _url in doc_shapes.frames("kraken"):
        if isinstance(d, list) and str(d[-2]).startswith(kraken.BOOK_CHANNEL_PREFIX):
            out += [p for p in d[1:-2]]
    return out


@pytest.mark.parametrize("payload", _payloads())
def test_kraken_book_payload_both_readers_agree(payload: Any) -> None:
    want = read_fields(kraken.BOOK_PAYLOAD, payload, "payload")
    assert scan(payload) == want
    assert any(col in want for col, _side in kraken.BOOK_LEVEL_COLUMNS)


@pytest.mark.parametrize(
    "payload",
    [
        {"a": [["1.0", "1.0", "1618678133.1"]], "c": "-5"},  # not a digit string
        {"a": [["1.0", "1.0", "1618678133.1"]], "c": 974942666},  # a number, not a string
        {"a": [["0", "1.0", "1618678133.1"]]},  # a zero price
        {"a": [["1.0", "1.0", "yesterday"]]},  # not epoch seconds
        {"b": [["1.0"]]},  # no size
    ],
)
def test_kraken_book_payload_broken_values_refused_by_both_readers(payload: Any) -> None:
    with pytest.raises(NormalizeError):
        read_fields(kraken.BOOK_PAYLOAD, payload, "payload")
    assert scan(payload) is None


def test_kraken_book_update_with_both_sides_keeps_checksum_and_latest_time() -> None:
    payload = {
        "a": [["2.5", "0.1", "1618678133.5", "r"]],
        "b": [["2.4", "0", "1618678134.25"]],
        "c": "4294967295",
    }
    got = scan(payload)
    assert got == read_fields(kraken.BOOK_PAYLOAD, payload, "payload")
    assert got is not None
    assert got["checksum"] == kraken.CHECKSUM_MAX
    assert got["bids"] == ([("2.4", "0")], 1_618_678_134_250_000_000)
