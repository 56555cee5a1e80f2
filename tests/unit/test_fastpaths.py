"""Fast paths of the demux give exactly what the per-line exact checks give.

``fluxforge.wire.decimal.fast_levels`` may only accept level lists the exact per-level checks
(``common.positive``/``common.dec``) accept, and must then return the very same list; anything
else it hands back (None). Checked on hand-made tricky rows and, end to end through
``demux_segment``, on every capture file and on tricky lines of every venue."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.demux import demux_segment
from fluxforge.demux.fastbook import FastBook
from fluxforge.events import NormalizeError
from fluxforge.segments import encode_envelope, frame_payload
from fluxforge.venues import common
from fluxforge.wire import decimal as demux_levels
from tests.unit import demux_compare

SEG = "segment_20231114T22_00001.ndjson"
BASE_TS = 1_699_999_200_000_000_000


def _exact_levels(rows: Any, where: str = "x") -> list[tuple[str, str]]:
    """The per-level checks of ``common.levels`` without its fast branch."""
    if not isinstance(rows, list):
        raise NormalizeError(f"{where}: expected a list of levels, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 2:
            raise NormalizeError(f"{where}[{i}]: expected [price, size, ...], got {row!r:.60}")
        out.append(
            (
                common.positive(row[0], f"{where}[{i}].price"),
                common.dec(row[1], f"{where}[{i}].size"),
            )
        )
    return out


GOOD_ROWS = [
    [],
    [["1", "0"]],
    [["0.00001306", "660.5"], ["7.6110", "2", "0", "4"]],
    [["30243.5", "1.2112", "0", "4"], ["1", "0.000000000001"]],
    [["0.043130", "11802.77325050", "1618678133.136361", "r"]],
    [["99999999999999999999999999.999999999999", "99999999999999999999999999"]],
    [["1.0", "0.0"]],
]
TRICKY_ROWS = [
    None,
    "1,2",
    {"1": "2"},
    [None],
    ["12"],  # a string row would index as characters
    [["1"]],
    [[]],
    [("1", "2")],
    [["1", 2]],  # JSON number
    [[1, "2"]],
    [["1.5", 2.5]],
    [["0", "1"]],  # zero price
    [["0.000", "1"]],
    [["-1", "1"]],
    [["1", "-1"]],
    [["1e5", "1"]],
    [["NaN", "1"]],
    [["inf", "1"]],
    [["1.", "1"]],
    [[".5", "1"]],
    [["", "1"]],
    [["1", ""]],
    [[" 1", "1"]],
    [["1 ", "1"]],
    [["1\x002", "1"]],  # the separator of the fast check inside a string
    [["1,2", "1"]],
    [["1", "1\n"]],
    [["١", "1"]],  # non-ASCII digit
    [["1.1234567890123456789", "1"]],  # 19 decimals
    [["123456789012345678901", "1"]],  # 21 integer digits, < 1e21
    [["100000000000000000000", "1"]],  # 1e20
    [["100000000000000000000000000", "1"]],  # 1e26: too large
    [["0.10000000000000000000", "1"]],  # zeros past the 12th decimal: accepted by dec
    [["1", "2.5000000000000"]],
    [["0.1000000000001", "1"]],  # a non-zero 13th decimal: refused
    [["0" * 30 + "1", "1"]],  # many leading zeros
    [["1", "1"], ["1", "x"]],
    [["1", "1"], "bad"],
    [["1", "1"], [True, "1"]],
    [[["1"], "1"]],
]


@pytest.mark.parametrize("rows", GOOD_ROWS + TRICKY_ROWS, ids=repr)
def test_fast_levels_any_rows_accepts_only_what_exact_checks_accept(rows: Any) -> None:
    fast = demux_levels.fast_levels(rows)
    try:
        want: list[tuple[str, str]] | str = _exact_levels(rows)
    except NormalizeError as exc:
        want = str(exc)
    if fast is not None:
        assert not isinstance(want, str), f"fast path accepted {rows!r}: {want}"
        assert fast == want
        assert all(type(a) is str and type(b) is str for a, b in fast)
    # the public function answers exactly as the per-level checks
    try:
        got: list[tuple[str, str]] | str = common.levels(rows, "x")
    except NormalizeError as exc:
        got = str(exc)
    assert got == want


@pytest.mark.parametrize("rows", GOOD_ROWS, ids=repr)
def test_fast_levels_plain_rows_engaged(rows: Any) -> None:
    assert demux_levels.fast_levels(rows) == _exact_levels(rows)


def _segment(files: list[Path]) -> bytes:
    out = []
    for seq, rec in enumerate(r for r in merge_captures(files) if r.kind in ("recv", "rest")):
        kind = "msg" if rec.kind == "recv" else "rest"
        out.append(
            encode_envelope(
                BASE_TS + seq * 10_000,
                "test",
                exchange_from_filename(rec.file),
                seq,
                kind,
                frame_payload(rec.payload),
                rec.url,
            )
        )
    return b"".join(out)


both_paths = demux_compare.both_paths
assert_same = demux_compare.assert_same


def test_demux_fast_paths_every_capture_equal_exact_path(
    captures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [p for p in sorted(captures.glob("*/*")) if ".ws." in p.name or ".http." in p.name]
    assert files
    for path in files:
        data = _segment([path])
        fast, slow = both_paths(data, monkeypatch)
        assert fast.lines_in > 0, path.name
        assert_same(fast, slow)


def _env(seq: int, ex: str, payload: bytes, kind: str = "msg", url: str | None = None) -> bytes:
    return encode_envelope(BASE_TS + seq, "test", ex, seq, kind, payload, url)


_KRAKEN_UPD = b'[1920,{"a":[%s],"c":"1234"},"book-1000","XBT/CHF"]'
_BITGET = (
    b'{"action":"update","arg":{"instType":"mc","channel":"books","instId":"DASHUSDT"},'
    b'"data":[{"asks":[%s],"bids":[["113.40","1"]],"checksum":-12345,"ts":"1626992741037"}]}'
)
_BINANCE = (
    b'{"stream":"sushiusdt@depth@100ms","data":{"e":"depthUpdate","E":1626992741037,'
    b'"T":1626992741024,"s":"SUSHIUSDT","U":1,"u":2,"pu":0,"b":[%s],"a":[]}}'
)
_OKX = (
    b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[%s],'
    b'"bids":[],"ts":"1626992741037","checksum":123}]}'
)
_LEVELS = [
    b'["1.5","2","1618678133.136361"]',
    b'["1.5" , "2" ,"1618678133.136361"]',
    b'["1.5","2","1618678133.136361","r"]',
    b'["1.5",2,"1618678133.136361"]',
    b'[1.5,"2","1618678133.136361"]',
    b'["1.5","2e3","1618678133.136361"]',
    b'["1\\u002e5","2","1618678133.136361"]',
    b'["0","2","1618678133.136361"]',
    b'["-1.5","2","1618678133.136361"]',
    b'["123456789012345678901.5","2","1618678133.136361"]',
    b'["100000000000000000000","2","1618678133.136361"]',
    b'["1.5","0.1234567890123456789","1618678133.136361"]',
    b'["1.5","0.10000000000000000000","1618678133.136361"]',
    b'["1.5000000000000","2","1618678133.136361"]',
    b'["1.5","0.1000000000001","1618678133.136361"]',
    b'["1.5"]',
    b'"1.5"',
    b'["1.5","2","1618678133.136361"],["1.6","0","1618678133.136362"]',
]


def test_demux_fast_paths_tricky_venue_lines_equal_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = []
    seq = 0
    for lv in _LEVELS:
        for ex, shape in (
            ("kraken", _KRAKEN_UPD),
            ("bitget", _BITGET),
            ("binanceusdm", _BINANCE),
            ("okx", _OKX),
        ):
            lines.append(_env(seq, ex, shape % lv))
            seq += 1
    rest = orjson.dumps({"lastUpdateId": 5, "bids": [["1", "2"], ["0.5", 3]], "asks": []})
    url = "https://fapi.binance.com/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
    lines.append(_env(seq, "binanceusdm", rest, "rest", url))
    data = b"".join(lines)
    fast, slow = both_paths(data, monkeypatch)
    assert_same(fast, slow)
    assert slow.quarantined >= 20
    assert fast.book_count >= 20


_KRAKEN_OK = b'[1920,{"a":[["0.043130","11802.7","1618678133.136361"]],"c":"2439117997"},"book-1000","XBT/CHF"]'  # noqa: E501
KRAKEN_TRICKY = [
    b'[1920,{"as":[["0.04313","1.5","1618678133.136361"]],"bs":[["0.04312","2","1618678133.1"]]},"book-1000","XBT/CHF"]',
    b'[1920,{"as":[],"bs":[]},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.136361","r"]]},{"b":[["0.0431","0","1618678134.5"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.136361"]],"c":"12"},{"b":[["0.0431","1","1618678134.5"]]},"book-1000","XBT/CHF"]',
    b'[1920, {"a": [ ["0.04313" ,"1.5", "1618678133.136361"] ] , "c" : "0012"} , "book-1000" , "XBT/CHF" ]',  # noqa: E501
    b'[1920,{"a":[["0.04313","1.5","1618678133.136361"]]},"book-1000","XBT/CHF"]',  # no checksum
    b'[1920,{},"book-1000","XBT/CHF"]',
    b'[1920,{"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.136361"]],"a":[["1","1"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"as":[["1","1"]],"a":[["2","1"]]},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.136361"]],"c":"12","x":1},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5",1618678133.136361]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[[0.04313,"1.5","1618678133.136361"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1234567891234"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","99999999999.5"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","5.5"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133."]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1",{"x":1}]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0","1.5","1618678133.1"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"4294967296"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"4294967295"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":""},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":12},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-0010","XBT/USD"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-10x","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","XBTCHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","../x"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","XBT\\/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","XBT/EUR"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-10","XBT/EUR"]',
    b'["x",{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000","XBT/CHF",1]',
    b'[1920,{"a":[["0.04313","1.5","1618678133.1"]],"c":"12"},"book-1000"]',
    b'[1920,{"a":[["1.2345678901234567891","1","1618678133.1"]],"c":"12"},"book-1000","XBT/CHF"]',
    b'[1920,{"a":[["123456789012345678901","1","1618678133.1"]],"c":"12"},"book-1000","XBT/CHF"]',
]


def test_demux_kraken_fast_path_tricky_lines_equal_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [_env(i, "kraken", _KRAKEN_OK) for i in range(5)]
    lines += [_env(100 + i, "kraken", p) for i, p in enumerate(KRAKEN_TRICKY)]
    lines.append(_env(300, "kraken", _KRAKEN_OK)[:-1] + b"\r\n")
    lines.append(_env(301, "kraken", _KRAKEN_OK).replace(b'"kind":"msg"', b'"kind": "msg"'))
    lines.append(_env(302, "kraken", _KRAKEN_OK, "rest"))
    lines.append(_env(303, "kraken", _KRAKEN_OK))
    data = b"".join(lines)
    fast, slow = both_paths(data, monkeypatch)
    assert sum(len(f) for f in fast.fast_books.values()) >= 15  # the columnar path engaged
    assert slow.fast_books == {}
    assert_same(fast, slow)
    assert slow.quarantined >= 15


def test_fastbook_batch_equals_batch_of_its_messages(captures: Path) -> None:
    """The columns reach the book kernel as the same batch the objects would give, plus the
    lake decimals of its levels, read by the scan (the objects' batch leaves them to the
    engine's parse)."""
    from fluxforge.book import BookBatch
    from fluxforge.book import kernel as K
    from fluxforge.wire.decimal import SCALE_LIMITS

    files = [p for p in sorted(captures.glob("KRAKEN/*")) if ".ws." in p.name]
    res = demux_segment(_segment(files), SEG, fast=True)
    assert res.fast_books
    for fast in res.fast_books.values():
        got = fast.batch(0, len(fast))
        want = BookBatch.from_messages([m for _, m in fast.to_messages()])
        assert want.words is None and got.words is not None
        no_arena = (np.zeros(0, np.uint8), np.zeros(1, np.int64))
        ids = np.arange(2 * want.n_levels)
        words, ok = K.decimals(ids, 0, *no_arena, want.arena, want.arena_offsets, *SCALE_LIMITS)
        assert ok and np.array_equal(got.words, words)
        for name, value in vars(want).items():
            other = getattr(got, name)
            if name == "words":
                continue
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, other), name
            else:
                assert value == other, name


def test_spent_columns_give_the_rows_of_kept_ones(
    captures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch applied in slices, each slice's levels handed back once applied (the
    refinery's way: ``FastBook.release``), gives the rows of the same batch kept whole, and
    the spent columns are no longer held (they read as zeros)."""
    from fluxforge.book import BookEngine
    from fluxforge.book import engine as book_engine

    monkeypatch.setattr(book_engine, "BATCH_LEVELS", 2000)  # several slices per book
    files = [p for p in sorted(captures.glob("BITGET/*")) if ".ws." in p.name]
    res = demux_segment(_segment(files), SEG, fast=True)
    assert res.fast_books
    for (ex, sym), fast in res.fast_books.items():
        own = FastBook(
            **{k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in vars(fast).items()}
        )
        kept = BookEngine(ex, sym, record_tops=False).apply_batch(fast.batch(0, len(fast)))
        spans: list[tuple[int, int]] = []

        def spent(l0: int, l1: int, book: FastBook = own, spans: list = spans) -> None:
            spans.append((l0, l1))
            book.release(l0, l1)

        engine = BookEngine(ex, sym, record_tops=False)
        got = engine.apply_batch(own.batch(0, len(own)), spent=spent)
        n = len(own.side)
        assert len(spans) > 2 and spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # in order, no gap
        for name in ("deltas", "snapshots", "gaps", "drift"):
            assert getattr(got, name).equals(getattr(kept, name)), name
        assert got.stats == kept.stats
        assert (fast.price_key > 0).all()
        assert (own.price_key == 0).mean() > 0.5  # handed back (not the pages at the edges)
        with pytest.raises(ValueError, match="record_tops"):
            BookEngine(ex, sym).apply_batch(fast.batch(0, len(fast)), spent=spent)


_OKX_ARG = b'"arg":{"channel":"books","instId":"BTC-USDT"}'
_OKX_ITEM = b'{"asks":[["30243.5","1.2","0","4"]],"bids":[["30243.1","0.5","0","1"]],"ts":"1626992741037","checksum":-123}'  # noqa: E501
_BG_ARG = b'"arg":{"instType":"mc","channel":"books","instId":"DASHUSDT"}'
_BG_ITEM = b'{"asks":[["113.42","6.40"]],"bids":[["113.40","1"]],"checksum":-487257069,"ts":"1649290077676"}'  # noqa: E501


def _okx(body: bytes) -> bytes:
    return b"{" + body + b"}"


OKX_TRICKY = [
    _okx(_OKX_ARG + b',"action":"snapshot","data":[' + _OKX_ITEM + b"]"),
    _okx(b'"action":"update",' + _OKX_ARG + b',"data":[' + _OKX_ITEM + b"]"),
    _okx(_OKX_ARG + b',"data":[' + _OKX_ITEM + b"]"),  # no action: snapshot
    _okx(_OKX_ARG + b',"action":"update","data":[' + _OKX_ITEM + b"," + _OKX_ITEM + b"]"),
    _okx(_OKX_ARG + b',"action":"update","data":[]'),
    _okx(_OKX_ARG + b',"action":"partial","data":[' + _OKX_ITEM + b"]"),
    _okx(_OKX_ARG + b',"action":"update","data":[' + _OKX_ITEM + b'],"x":1'),
    _okx(_OKX_ARG + b',"action":"update","data":[' + _OKX_ITEM + b'],"event":"error"'),
    _okx(b'"arg":{"channel":"books5","instId":"SOL-USDT"},"data":[' + _OKX_ITEM + b"]"),
    _okx(b'"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[' + _OKX_ITEM + b"]"),
    _okx(
        b'"arg":{"channel":"books","instId":"ETH-USDT","instType":"SPOT"},"data":['
        + _OKX_ITEM
        + b"]"
    ),
    _okx(b'"arg":{"channel":"books","instId":"../x"},"data":[' + _OKX_ITEM + b"]"),
    _okx(b'"arg":{"channel":"books","instId":"BTC\\u002dUSDT"},"data":[' + _OKX_ITEM + b"]"),
    _okx(b'"arg":{"channel":"books"},"data":[' + _OKX_ITEM + b"]"),
]
for _item in (
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":0,"seqId":5,"prevSeqId":-1'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":0'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":-123,"seqId":7,"prevSeqId":5'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":2147483648'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":-2147483648'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":"5"'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":null'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":1.5'),
    _OKX_ITEM.replace(b'"checksum":-123', b'"checksum":-0'),
    _OKX_ITEM.replace(b',"checksum":-123', b""),
    _OKX_ITEM.replace(b'"ts":"1626992741037"', b'"ts":1626992741037'),
    _OKX_ITEM.replace(b'"ts":"1626992741037"', b'"ts":"1626992741"'),
    _OKX_ITEM.replace(b'"ts":"1626992741037"', b'"ts":"01626992741037"'),
    _OKX_ITEM.replace(b'"ts":"1626992741037"', b'"ts":"1626992741037.5"'),
    _OKX_ITEM.replace(b',"ts":"1626992741037"', b""),
    _OKX_ITEM.replace(b'"asks"', b'"asks":[],"asks"'),
    _OKX_ITEM.replace(b'["30243.5","1.2","0","4"]', b'["30243.5","1.2",0,4]'),
    _OKX_ITEM.replace(b'["30243.5","1.2","0","4"]', b'["30243.5"]'),
    _OKX_ITEM.replace(b'"1.2"', b'"-1.2"'),
    _OKX_ITEM.replace(b'"30243.5"', b'"0.0"'),
    _OKX_ITEM.replace(b'"30243.5"', b'"1e5"'),
    _OKX_ITEM.replace(b'"30243.5"', b'"123456789012345678901"'),
    _OKX_ITEM.replace(b"[[", b"[ [ ").replace(b"]]", b" ] ]"),
    _OKX_ITEM.replace(b'"seqId"', b'"seqId"') + b"",
    _OKX_ITEM[:-1] + b',"seqId":"5"}',
    _OKX_ITEM[:-1] + b',"extra":1}',
):
    OKX_TRICKY.append(_okx(_OKX_ARG + b',"action":"update","data":[' + _item + b"]"))

BITGET_TRICKY = [
    _okx(b'"action":"snapshot",' + _BG_ARG + b',"data":[' + _BG_ITEM + b"]"),
    _okx(_BG_ARG + b',"data":[' + _BG_ITEM + b"]"),
    _okx(
        b'"action":"update","arg":{"instType":"sp","channel":"books","instId":"BTCUSDT"},'
        b'"data":[' + _BG_ITEM + b"]"
    ),
    _okx(
        b'"action":"update","arg":{"channel":"books15","instId":"ETHUSDT"},"data":['
        + _BG_ITEM
        + b"]"
    ),
    _okx(
        b'"action":"update","arg":{"channel":"books","instId":"BTCUSDT_UMCBL"},"data":['
        + _BG_ITEM
        + b"]"
    ),
    _okx(
        b'"action":"update",'
        + _BG_ARG
        + b',"data":['
        + _BG_ITEM.replace(b'"checksum":-487257069', b'"checksum":0,"seq":12')
        + b"]"
    ),
    _okx(
        b'"action":"update",'
        + _BG_ARG
        + b',"data":['
        + _BG_ITEM.replace(b'"checksum":-487257069', b'"checksum":0')
        + b"]"
    ),
    _okx(
        b'"action":"update",'
        + _BG_ARG
        + b',"data":['
        + _BG_ITEM.replace(b'"checksum":-487257069', b'"seq":12,"checksum":5')
        + b"]"
    ),
    _okx(b'"action":"update",' + _BG_ARG + b',"data":[' + _BG_ITEM[:-1] + b',"seqId":1}]'),
    _okx(
        b'"action":"update",'
        + _BG_ARG
        + b',"result":1,"method":"watch_trades","data":['
        + _BG_ITEM
        + b"]"
    ),
    _okx(b'"action":"update",' + _BG_ARG + b',"data":[' + _BG_ITEM + b"," + _BG_ITEM + b"]"),
]

# trade and ticker pushes (read by the venues' TRADE / TRADE_ROW / TICKER declarations)
_BG_TRADE = b'["1649290080580","113.49","0.43","sell"]'
_BG_TRADE_V2 = b'{"ts":"1649290080580","price":"1","size":"2","side":"buy","tradeId":"7"}'
_BG_TICKER = b'{"instId":"DASHUSDT","last":"113.370","bestAsk":"113.41","bestBid":"113.36","systemTime":1649290077309}'  # noqa: E501
_OKX_TRADE = (
    b'{"instId":"BTC-USDT","tradeId":"1","px":"1.5","sz":"2","side":"buy","ts":"1652459224818"}'
)
_BG_T = b'"arg":{"instType":"mc","channel":"trade","instId":"DASHUSDT"}'
_BG_K = b'"arg":{"instType":"mc","channel":"ticker","instId":"DASHUSDT"}'
for _arg, _items in (
    (_BG_T, _BG_TRADE),
    (_BG_T.replace(b'"mc"', b'""'), _BG_TRADE),
    (_BG_T.replace(b'"instType":"mc",', b""), _BG_TRADE),
    (_BG_T, _BG_TRADE + b"," + _BG_TRADE),
    (_BG_T, _BG_TRADE[:-1] + b',"x"]'),
    (_BG_T, _BG_TRADE.replace(b"sell", b"SELL")),
    (_BG_T, _BG_TRADE.replace(b'"0.43"', b"0.43")),
    (_BG_T, _BG_TRADE_V2),
    (_BG_K, _BG_TICKER),
    (_BG_K, _BG_TICKER[:-1] + b',"bidPr":"1"}'),
    (_BG_K, _BG_TICKER.replace(b"1649290077309", b"null")),
    (_BG_K, _BG_TICKER.replace(b'"113.36"', b'""')),
    (_BG_K, _BG_TICKER[:-1] + b',"nested":{"a":1}}'),
):
    for _action in (b'"action":"update",', b'"action":"snapshot",'):
        BITGET_TRICKY.append(_okx(_action + _arg + b',"data":[' + _items + b"]"))
    BITGET_TRICKY.append(_okx(b'"data":[' + _items + b'],"action":"update",' + _arg))
_OKX_T = b'"arg":{"channel":"trades","instId":"BTC-USDT"},"data":['
for _item in (
    _OKX_TRADE,
    _OKX_TRADE.replace(b'"1"', b'""'),
    _OKX_TRADE.replace(b'"1"', b"1"),
    _OKX_TRADE.replace(b'"buy"', b'"BUY"'),
    _OKX_TRADE[:-1] + b',"count":"3","seqId":12}',
    _OKX_TRADE.replace(b'"BTC-USDT"', b'"../x"'),
    _OKX_TRADE + b"," + _OKX_TRADE.replace(b'"BTC-USDT"', b'"ETH-USDT"'),
):
    OKX_TRICKY.append(_okx(_OKX_T + _item + b"]"))
_OKX_K = b'"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":['
for _item in (
    b'{"instId":"BTC-USDT","last":"1","bidPx":"","bidSz":"","askPx":"2","ts":"1652459224818"}',
    b'{"instId":"BTC-USDT","last":null,"ts":1652459224818}',
    b'{"instId":"BTC-USDT","last":"1","ts":"1652459224818","bidPx":1.5}',
):
    OKX_TRICKY.append(_okx(_OKX_K + _item + b"]"))


def test_demux_okx_bitget_fast_path_tricky_lines_equal_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upd_okx = _okx(_OKX_ARG + b',"action":"update","data":[' + _OKX_ITEM + b"]")
    upd_bg = _okx(b'"action":"update",' + _BG_ARG + b',"data":[' + _BG_ITEM + b"]")
    lines = [_env(i, "okx", upd_okx) for i in range(3)]
    lines += [_env(10 + i, "bitget", upd_bg) for i in range(3)]
    lines += [_env(100 + i, "okx", p) for i, p in enumerate(OKX_TRICKY)]
    lines += [_env(200 + i, "bitget", p) for i, p in enumerate(BITGET_TRICKY)]
    lines.append(_env(300, "okx", upd_okx)[:-1] + b" \n")
    lines.append(_env(301, "bitget", upd_bg, "rest"))
    lines.append(_env(302, "okx", upd_okx, url="wss://x"))
    lines.append(_env(303, "bitget", upd_bg).replace(b'"ex":"bitget"', b'"ex":"okx"'))
    data = b"".join(lines)
    fast, slow = both_paths(data, monkeypatch)
    taken = {key: len(f) for key, f in fast.fast_books.items()}
    assert taken.get(("okx", "BTC-USDT"), 0) >= 15, taken
    assert taken.get(("bitget", "DASH-USDT-SWAP"), 0) >= 5, taken
    assert_same(fast, slow)
    assert slow.quarantined >= 15


_BN = (
    b'{"stream":"sushiusdt@depth@100ms","data":{"e":"depthUpdate","E":1626992741037,'
    b'"T":1626992741024,"s":"SUSHIUSDT","U":10,"u":12,"pu":9,"b":[["7.5040","813"]],'
    b'"a":[["7.6150","1563"]]}}'
)
BINANCE_TRICKY = [
    _BN.replace(b'"E":1626992741037,', b""),
    _BN.replace(b'"E":1626992741037', b'"E":"1626992741037"'),
    _BN.replace(b'"E":1626992741037', b'"E":null'),
    _BN.replace(b'"E":1626992741037', b'"E":1626992741'),
    _BN.replace(b'"pu":9,', b""),
    _BN.replace(b'"pu":9', b'"pu":-1'),
    _BN.replace(b'"U":10', b'"U":13'),
    _BN.replace(b'"U":10', b'"U":"10"'),
    _BN.replace(b'"u":12', b'"u":99999999999999999999'),
    _BN.replace(b'"T":1626992741024,', b'"T":1626992741024,"ps":"SUSHIUSDT",'),
    _BN.replace(b'"T":1626992741024,', b'"x":1,'),
    _BN.replace(b'"b":[["7.5040","813"]]', b'"b":[]'),
    _BN.replace(b'"b":[["7.5040","813"]]', b'"b":[["7.5040",813]]'),
    _BN.replace(b'"b":[["7.5040","813"]]', b'"b":[["0","813"]]'),
    _BN.replace(b'"b":[["7.5040","813"]],', b""),
    _BN.replace(b'"s":"SUSHIUSDT"', b'"s":"SUSHI\\u0055SDT"'),
    _BN.replace(b'"s":"SUSHIUSDT"', b'"s":"../x"'),
    _BN.replace(b'"s":"SUSHIUSDT"', b'"s":"AKROUSDT"'),
    _BN.replace(b'"e":"depthUpdate"', b'"e":"depthUpdatex"'),
    _BN.replace(b"sushiusdt@depth@100ms", b"akrousdt@depth5@100ms").replace(b"SUSHI", b"AKRO"),
    _BN.replace(b'"stream":"sushiusdt@depth@100ms",', b""),
    _BN.replace(b'{"stream"', b'{"id":1,"stream"'),
    _BN.replace(b'"data":{"e"', b'"data" : { "e"'),
]


def test_demux_binance_fast_path_tricky_lines_equal_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [_env(i, "binanceusdm", _BN) for i in range(3)]
    lines += [_env(10 + i, "binance", _BN) for i in range(3)]
    lines += [_env(100 + i, "binanceusdm", p) for i, p in enumerate(BINANCE_TRICKY)]
    lines += [_env(200 + i, "binance", p) for i, p in enumerate(BINANCE_TRICKY)]
    rest = orjson.dumps({"lastUpdateId": 11, "bids": [["7.5", "2"]], "asks": [["7.7", "1"]]})
    url = "https://fapi.binance.com/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
    lines.insert(2, _env(50, "binanceusdm", rest, "rest", url))
    lines.insert(5, _env(51, "binance", rest, "rest", url))
    data = b"".join(lines)
    fast, slow = both_paths(data, monkeypatch)
    taken = {key: len(f) for key, f in fast.fast_books.items()}
    assert taken.get(("binanceusdm", "SUSHI-USDT"), 0) >= 5, taken
    assert taken.get(("binance", "SUSHI-USDT"), 0) >= 5, taken
    assert_same(fast, slow)
    assert slow.quarantined >= 10
    # per-line REST snapshots merge into the columns of their instrument
    from fluxforge.demux import merge_columns

    for ex in ("binanceusdm", "binance"):
        msgs = slow.books_by_instrument()[(ex, "SUSHI-USDT")]
        fast_msgs = fast.books_by_instrument().get((ex, "SUSHI-USDT"), [])
        merged = merge_columns(fast.fast_books[(ex, "SUSHI-USDT")], fast_msgs)
        assert merged is not None
        assert merged.to_messages() == msgs


_BT = (
    b'{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,'
    b'"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120","A":"297","T":1626992741012,'
    b'"E":1626992741017}}'
)
TICKER_TRICKY = [
    _BT.replace(b',"E":1626992741017', b""),
    _BT.replace(b'"T":1626992741012,', b""),
    _BT.replace(b'"E":1626992741017', b'"E":"1626992741017"'),
    _BT.replace(b'"E":1626992741017', b'"E":16269927410'),
    _BT.replace(b'"e":"bookTicker",', b""),
    _BT.replace(b'"b":"7.6110"', b'"b":7.611'),
    _BT.replace(b'"b":"7.6110"', b'"b":"0"'),
    _BT.replace(b'"b":"7.6110"', b'"b":""'),
    _BT.replace(b'"b":"7.6110"', b'"b":"-1"'),
    _BT.replace(b'"B":"2"', b'"B":"1.1234567890123456789"'),
    _BT.replace(b'"B":"2"', b'"B":"123456789012345678901"'),
    _BT.replace(b'"A":"297"', b'"A":"2\\u00397"'),
    _BT.replace(b'"u":600859600576', b'"u":-1'),
    _BT.replace(b'"u":600859600576,', b""),
    _BT.replace(b'"s":"SUSHIUSDT"', b'"s":"../x"'),
    _BT.replace(b'"s":"SUSHIUSDT"', b'"s":"BTCUSD_PERP"'),
    _BT.replace(b'"s":"SUSHIUSDT",', b'"s":"SUSHIUSDT","s":"X",'),
    _BT.replace(b'"T":1626992741012', b'"T":1626992741012,"x":null'),
    _BT.replace(b'"a":"7.6120","A":"297"', b'"A":"297","a":"7.6120"'),
    _BT.replace(b"sushiusdt@bookTicker", b"sushiusdt@depth10"),
    _BT.replace(b'{"stream":"sushiusdt@bookTicker","data":', b'{"data":'),
    _BT.replace(b'"data":{"e"', b'"data" :  {"e"'),
]


def test_demux_binance_book_ticker_quick_path_equals_exact_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fluxforge.demux.binance import quick_book_tickers

    lines = [_env(i, "binanceusdm", _BT) for i in range(3)]
    lines += [_env(10 + i, "binance", _BT) for i in range(2)]
    lines += [_env(100 + i, "binanceusdm", p) for i, p in enumerate(TICKER_TRICKY)]
    lines += [_env(200 + i, "binancecoinm", p) for i, p in enumerate(TICKER_TRICKY)]
    data = b"".join(lines)
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    todo = np.ones(len(starts), dtype=bool)
    assert len(quick_book_tickers("binanceusdm", data, buf, starts, ends, todo)) >= 8
    assert len(quick_book_tickers("binance", data, buf, starts, ends, todo)) == 2
    fast, slow = both_paths(data, monkeypatch)
    assert_same(fast, slow)
    assert fast.quotes.num_rows >= 25
    assert slow.quarantined >= 6
