"""Kraken websocket API v2 (``wss://ws.kraken.com/v2``): no capture of it exists, so the lines
below follow the message examples of Kraken's v2 documentation (channels ``book``, ``trade``,
``ticker``, the subscribe ack, ``status`` and ``heartbeat``), written as the venue sends them:
prices and quantities are JSON numbers, with their trailing zeros (``0.5670``, ``15000.0``).

The book checksums are computed here, independently of the library, by the documented rule
(CRC32 of the top 10 asks low to high then the top 10 bids high to low, each price and qty
with ``.`` removed and leading zeros stripped, as an unsigned 32-bit integer), over a book
this test keeps itself. The book engine must verify every one; an altered one must fail."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal

import pytest

from fluxforge.book import BookEngine
from fluxforge.demux import demux_segment
from fluxforge.events import CHECKSUM_KRAKEN
from fluxforge.segments import encode_envelope
from tests.fixtures import doc_shapes
from tests.unit.demux_compare import assert_same, both_paths

SEG = doc_shapes.SEGMENT
TS = doc_shapes.BASE_NS

SNAP_BIDS = [
    ("0.5666", "4831.75496356"), ("0.5665", "6658.22734739"), ("0.5664", "18724.91513344"),
    ("0.5663", "13563.54088247"), ("0.5662", "16741.58010114"), ("0.5661", "15000.0"),
    ("0.5660", "5000.00000000"), ("0.5659", "2000.5"), ("0.5658", "250.00100000"),
    ("0.5657", "1098.3947558"),
]  # fmt: skip
SNAP_ASKS = [
    ("0.5668", "4410.79769741"), ("0.5669", "4655.40412487"), ("0.5670", "51136.36402157"),
    ("0.5671", "7400.2"), ("0.5672", "0.00100000"), ("0.5673", "3000"), ("0.5674", "12.5"),
    ("0.5675", "100.10"), ("0.5676", "8000.0"), ("0.5677", "42"),
]  # fmt: skip
# each update: (bids, asks, timestamp); qty 0 removes a level
UPDATES = [
    ([("0.5666", "0")], [("0.5668", "4400.0")], "2023-10-06T17:35:55.440295Z"),
    ([("0.5667", "120.50")], [], "2023-10-06T17:35:55.540295Z"),
    ([], [("0.5668", "0"), ("0.5678", "33.30")], "2023-10-06T17:35:56.000001Z"),
    ([("0.5656", "0.5"), ("0.5660", "4999.9")], [("0.5669", "0.00100000")],
     "2023-10-06T17:35:57.123Z"),
]  # fmt: skip


def _f(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def kraken_v2_checksum(bids: dict[str, str], asks: dict[str, str]) -> int:
    """The documented rule, over this test's own book (price text -> qty text)."""
    top_asks = sorted(asks.items(), key=lambda lv: Decimal(lv[0]))[:10]
    top_bids = sorted(bids.items(), key=lambda lv: -Decimal(lv[0]))[:10]
    text = "".join(_f(px) + _f(qty) for px, qty in top_asks + top_bids)
    return zlib.crc32(text.encode()) & 0xFFFFFFFF


def _levels(rows: list[tuple[str, str]]) -> str:
    # JSON numbers written with their exact text, as the venue does (never through a float)
    return "[" + ",".join(f'{{"price":{px},"qty":{qty}}}' for px, qty in rows) + "]"


def book_lines() -> tuple[list[bytes], list[int]]:
    """The book messages (snapshot, updates) and the checksum each carries."""
    bids, asks = dict(SNAP_BIDS), dict(SNAP_ASKS)
    checksums = [kraken_v2_checksum(bids, asks)]
    lines = [
        '{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD","bids":'
        + _levels(SNAP_BIDS) + ',"asks":' + _levels(SNAP_ASKS)
        + f',"checksum":{checksums[0]},"timestamp":"2023-10-06T17:35:55.000000Z"}}]}}'
    ]  # fmt: skip
    for ub, ua, stamp in UPDATES:
        for book, rows in ((bids, ub), (asks, ua)):
            for px, qty in rows:
                if Decimal(qty) == 0:
                    book.pop(px, None)
                else:
                    book[px] = qty
        checksums.append(kraken_v2_checksum(bids, asks))
        lines.append(
            '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":'
            + _levels(ub) + ',"asks":' + _levels(ua)
            + f',"checksum":{checksums[-1]},"timestamp":"{stamp}"}}]}}'
        )  # fmt: skip
    return [line.encode() for line in lines], checksums


OTHER_LINES = [
    b'{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,'
    b'"symbol":"MATIC/USD"},"success":true,"time_in":"2023-10-06T17:35:54.900000Z",'
    b'"time_out":"2023-10-06T17:35:54.900100Z"}',
    b'{"channel":"status","type":"update","data":[{"version":"2.0.0","system":"online",'
    b'"api_version":"v2","connection_id":12393906104898154338}]}',
    b'{"channel":"heartbeat"}',
    b'{"channel":"trade","type":"snapshot","data":[{"symbol":"MATIC/USD","side":"sell",'
    b'"price":0.5117,"qty":40.0,"ord_type":"market","trade_id":4665906,'
    b'"timestamp":"2023-09-25T07:49:37.708706Z"},{"symbol":"MATIC/USD","side":"buy",'
    b'"price":0.5120,"qty":0.00100000,"ord_type":"limit","trade_id":4665907,'
    b'"timestamp":"2023-09-25T07:49:38.000000Z"}]}',
    b'{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"buy",'
    b'"price":0.5147,"qty":6423.46326,"ord_type":"limit","trade_id":4665908,'
    b'"timestamp":"2023-09-25T07:49:40.500000Z"}]}',
    b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,'
    b'"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,'
    b'"volume":997038.98383185,"vwap":0.10148,"low":0.09979,"high":0.10285,'
    b'"change":-0.0017,"change_pct":-1.67}]}',
    b'{"channel":"ticker","type":"update","data":[{"symbol":"ALGO/USD","bid":0.10030,'
    b'"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10030,'
    b'"volume":997040.0,"vwap":0.10148,"low":0.09979,"high":0.10285,"change":-0.0012,'
    b'"change_pct":-1.18,"timestamp":"2023-10-06T17:35:58.250000Z"}]}',
]


def segment(payloads: list[bytes]) -> bytes:
    return b"".join(
        encode_envelope(TS + k * 1000, "test", "kraken", k, "msg", p)
        for k, p in enumerate(payloads)
    )


@pytest.fixture(scope="module")
def v2() -> tuple[bytes, list[int]]:
    books, checksums = book_lines()
    return segment(OTHER_LINES[:3] + books + OTHER_LINES[3:]), checksums


def test_kraken_v2_lines_are_normalized_with_exact_number_text(v2) -> None:
    data, checksums = v2
    res = demux_segment(data, SEG)
    assert res.quarantined == 0, res.quarantine.column("reason").to_pylist()
    assert (res.data, res.control) == (5 + 4, 3)
    trades = res.trades.to_pylist()
    assert [(t["trade_id"], t["price"], t["size"], t["side"]) for t in trades] == [
        ("4665906", "0.5117", "40.0", "sell"),
        ("4665907", "0.5120", "0.00100000", "buy"),
        ("4665908", "0.5147", "6423.46326", "buy"),
    ]
    assert {t["symbol"] for t in trades} == {"MATIC-USD"}
    quotes = res.quotes.to_pylist()
    assert [(q["bid_px"], q["bid_sz"], q["ask_px"], q["last"]) for q in quotes] == [
        ("0.10025", "740.0", "0.10036", "0.10035"),
        ("0.10030", "740.0", "0.10036", "0.10030"),
    ]
    assert quotes[0]["ts_event"] == quotes[0]["ts_recv"]  # no timestamp: the receive time
    msgs = [m for _, m in res.books_by_instrument_all()]
    assert [m.checksum for m in msgs] == checksums
    assert all(m.checksum_kind == CHECKSUM_KRAKEN and m.symbol == "MATIC-USD" for m in msgs)
    assert [m.is_snapshot for m in msgs] == [True, False, False, False, False]
    assert msgs[0].bids == SNAP_BIDS and msgs[0].asks == SNAP_ASKS  # "0.5670", "15000.0"


def test_kraken_v2_book_engine_verifies_every_documented_checksum(v2) -> None:
    data, checksums = v2
    msgs = [m for _, m in demux_segment(data, SEG).books_by_instrument_all()]
    out = BookEngine("kraken", "MATIC-USD", segment=SEG).apply(msgs)
    assert (out.stats.checksums_verified, out.stats.checksum_mismatches) == (len(checksums), 0)


def test_kraken_v2_altered_checksum_is_a_mismatch(v2) -> None:
    books, checksums = book_lines()
    bad = books[2].replace(str(checksums[2]).encode(), str(checksums[2] ^ 1).encode())
    msgs = [m for _, m in demux_segment(segment([books[0], books[1], bad]), SEG)
            .books_by_instrument_all()]  # fmt: skip
    out = BookEngine("kraken", "MATIC-USD", segment=SEG).apply(msgs)
    assert out.stats.checksum_mismatches == 1


def test_kraken_v2_number_text_through_a_float_would_break_the_checksum() -> None:
    # the reason the exact text is kept: "0.5670" and 0.567 give different checksum strings
    asks = {px: qty for px, qty in SNAP_ASKS}
    as_floats = {repr(float(px)): repr(float(qty)) for px, qty in SNAP_ASKS}
    assert kraken_v2_checksum({}, asks) != kraken_v2_checksum({}, as_floats)
    assert json.loads(b'{"p":0.5670}')["p"] == 0.567


def test_kraken_v2_fast_path_equals_per_line_path(v2, monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = v2
    fast, slow = both_paths(data, monkeypatch, SEG)
    assert_same(fast, slow)
    assert fast.per_line == 2  # the subscribe ack and the status line; the rest: scanners


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":[],'
         b'"asks":[{"price":1e-5,"qty":1}],"checksum":1}]}', "price"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":[],'
         b'"asks":[],"checksum":4294967296}]}', "unsigned crc32"),
        (b'{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD","bids":[],'
         b'"asks":[]}]}', "missing field 'checksum'"),
        (b'{"channel":"book","type":"partial","data":[]}', "not snapshot/update"),
        (b'{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"up",'
         b'"price":1,"qty":1,"trade_id":1,"timestamp":"2023-09-25T07:49:40Z"}]}', "not buy/sell"),
        (b'{"channel":"level9","type":"update","data":[]}', "unknown channel"),
    ],
)  # fmt: skip
def test_kraken_v2_bad_lines_quarantined_with_reason(payload: bytes, reason: str) -> None:
    res = demux_segment(segment([payload]), SEG)
    assert res.quarantined == 1
    assert reason in res.quarantine.column("reason")[0].as_py()
