"""The lake's decimal scale (12, ``fluxforge.tables.DECIMAL``) on wire values: zeros past the
12th decimal are venue padding and accepted as the same number; a non-zero digit there, or a
value of 1e26 or more, is refused with the value and the limit named. The per-line checks
(``venues.common.dec``), the fast paths (``FAST_DEC_RE``, the numba ``plain_decimal`` and
``fast_levels``), the book kernel's parser and the cast to the lake's type all agree."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import orjson
import pyarrow as pa
import pytest

from fluxforge.book import BookEngine, BookInputError
from fluxforge.book import kernel as K
from fluxforge.book.engine import _decimal_column
from fluxforge.demux import cast_prices
from fluxforge.events import NormalizeError
from fluxforge.segments import encode_envelope
from fluxforge.tables import DECIMAL
from fluxforge.venues import common
from fluxforge.wire import decimal as wire
from tests.unit import demux_compare

ACCEPTED = [
    "0.1",
    "0.000000000001",  # the finest documented tick (OKX, Bitget: 1e-12)
    "99999999999999999999999999.999999999999",  # 26 integer digits, 12 decimals
    "0.10000000000000000000",  # padded to 20 decimals: exactly 0.1
    "7.123456789012000",
    "1." + "0" * 40,  # longer than Arrow's 38 digits, still exactly 1
    "65000.00000000000000000000",
]
REFUSED = [
    ("0.1000000000001", "13 decimals with a non-zero digit past the 12th"),
    ("0.10000000000000000001", "20 decimals with a non-zero digit past the 12th"),
    ("1.0000000000000000000000000000000000000000001", "43 decimals with a non-zero"),
    ("100000000000000000000000000", "1e26 or larger"),
]


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8)


def _kernel(text: str) -> tuple[bool, Decimal | None]:
    arena = (_bytes(text), np.array([0, len(text)], np.int64))
    empty = (0, np.zeros(0, np.uint8), np.zeros(1, np.int64))
    words, ok = K.decimals(np.arange(1), *empty, *arena, DECIMAL.scale, 26)
    if not ok:
        return False, None
    arr = pa.Array.from_buffers(DECIMAL, 1, [None, pa.py_buffer(words)], null_count=0)
    return True, arr[0].as_py()


@pytest.mark.parametrize("text", ACCEPTED)
def test_scale_padded_or_fitting_value_accepted_by_every_path(text: str) -> None:
    # per-line: the exact wire text is kept (venue checksums are computed over it)
    assert common.dec(text, "px") == text
    assert common.levels([[text, text]], "b") == [(text, text)]
    # fast paths: they take a value only when it fits as written, else leave it to dec
    fast = wire.FAST_DEC_RE.fullmatch(text) is not None
    assert wire.plain_decimal(_bytes(text), 0, len(text), True) == fast
    assert wire.fast_levels([[text, text]]) == ([(text, text)] if fast else None)
    assert fast == (len(text.partition(".")[2]) <= 12)
    # the book kernel and the cast to the lake's type give the exact number
    assert _kernel(text) == (True, Decimal(text))
    assert wire.to_decimal(pa.array([text])).to_pylist() == [Decimal(text)]
    assert _decimal_column(np.arange(1), _arenas(text)).to_pylist() == [Decimal(text)]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_scale_non_zero_digit_past_scale_or_too_large_refused_by_every_path(
    text: str, reason: str
) -> None:
    with pytest.raises(NormalizeError, match=reason) as info:
        common.dec(text, "book.asks[0].size")
    message = str(info.value)
    assert text[:40] in message and "book.asks[0].size" in message
    assert "the lake keeps 12 decimals" in message or "the lake's limit" in message
    with pytest.raises(NormalizeError, match=reason):
        common.levels([["1", text]], "asks")
    assert wire.FAST_DEC_RE.fullmatch(text) is None
    assert not wire.plain_decimal(_bytes(text), 0, len(text), False)
    assert wire.fast_levels([["1", text]]) is None
    assert _kernel(text) == (False, None)
    with pytest.raises(pa.ArrowInvalid):
        wire.to_decimal(pa.array([text]))
    with pytest.raises(BookInputError, match=r"does not fit decimal\(38, 12\)") as book:
        _decimal_column(np.arange(1), _arenas(text))
    assert repr(text[:64]) in str(book.value)


def _arenas(text: str) -> tuple:
    return (0, np.zeros(0, np.uint8), np.zeros(1, np.int64), _bytes(text), np.array([0, len(text)]))


TS = 1_618_677_817_000_000_000


def _line(seq: int, payload: dict) -> bytes:
    return encode_envelope(TS + seq, "src", "coinbase", seq, "msg", orjson.dumps(payload))


def _match(seq: int, price: str, size: str) -> bytes:
    return _line(
        seq,
        {
            "type": "match", "trade_id": seq, "maker_order_id": "m", "taker_order_id": "t",
            "side": "buy", "size": size, "price": price, "product_id": "SKL-BTC",
            "sequence": seq, "time": "2021-04-17T16:43:37.089723Z",
        },
    )  # fmt: skip


def _l2(seq: int, price: str, size: str) -> bytes:
    return _line(
        seq,
        {
            "type": "l2update", "product_id": "SKL-BTC", "changes": [["buy", price, size]],
            "time": "2021-04-17T16:43:37.075687Z",
        },
    )  # fmt: skip


def test_scale_segment_padded_values_exact_and_bad_lines_quarantined_with_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end through the demux (scanners and per-line path alike) and the book engine:
    padded values land exactly, a value with a non-zero 13th decimal quarantines its line
    naming the value and the limit, and every other line is kept."""
    snapshot = {
        "type": "snapshot",
        "product_id": "SKL-BTC",
        "bids": [["0.00001300", "1.000000000000000000000"]],
        "asks": [["0.00001310", "5"]],
    }
    data = b"".join(
        [
            _line(1, snapshot),
            _match(2, "0.00001305000000000000", "985.000000000000000000"),
            _match(3, "0.00001305", "0.1000000000001"),
            _l2(4, "0.00001301000000000000", "0.10000000000000000000"),
            _l2(5, "0.00001302", "2.0000000000000000000000000000000000000000001"),
            _match(6, "0.000000000001", "7"),
        ]
    )
    fast, slow = demux_compare.both_paths(data, monkeypatch)
    demux_compare.assert_same(fast, slow)
    assert (fast.data, fast.quarantined) == (4, 2)
    reasons = fast.quarantine.column("reason").to_pylist()
    assert "'0.1000000000001'" in reasons[0] and "the lake keeps 12 decimals" in reasons[0]
    assert "'2.00000000000000" in reasons[1] and "the lake keeps 12 decimals" in reasons[1]
    trades = cast_prices(fast.trades, "trades")
    assert trades.schema.field("price").type == DECIMAL
    assert list(zip(trades["price"].to_pylist(), trades["size"].to_pylist(), strict=True)) == [
        (Decimal("0.00001305"), Decimal("985")),
        (Decimal("0.000000000001"), Decimal("7")),
    ]
    msgs = [m for _, m in fast.books_by_instrument()[("coinbase", "SKL-BTC")]]
    out = BookEngine("coinbase", "SKL-BTC").apply(msgs)
    levels = list(zip(out.deltas["price"].to_pylist(), out.deltas["size"].to_pylist(), strict=True))
    assert levels == [
        (Decimal("0.00001300"), Decimal("1")),
        (Decimal("0.00001310"), Decimal("5")),
        (Decimal("0.00001301"), Decimal("0.1")),
    ]
