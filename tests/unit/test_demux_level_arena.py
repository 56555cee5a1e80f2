"""The demux's level columns: one gather per instrument straight into the book batch's arena,
with the float keys and the lake decimals of the strings parsed on the way, must equal the
plain construction (a stable sort of the levels, Arrow strings, Arrow's float and decimal
casts)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from fluxforge.book import BookBatch
from fluxforge.demux import fastbook
from fluxforge.demux.bytescan import LV_COLS, put_level, text_at
from fluxforge.demux.fastbook import LevelColumns, by_code
from fluxforge.tables import DECIMAL
from fluxforge.wire.decimal import copy_decimal_key

EDGES = [
    "0", "0.0", "1", "12.34", "0.00000100", "100", ".5", "007", "00.50", "0.000000000001",
    "9007199254740992", "9007199254740993", "123456789012345678", "1234567890123456789",
    "99999999999999999999999999.123456789012", "0.1", "0.3", "2.675", "1.0000000000000001",
    "37000.12", "0.10000000000000000000", "4294967296.000000001",
]  # fmt: skip
PLAIN = re.compile(r"[0-9]*(\.[0-9]+)?")
NOT_FAST = ["5.", "", "1e5", "-1", "+1", "1.2.3", "12a", "9007199254740993", "1234567890123456789"]


def _key(text: str) -> tuple[float, bool]:
    src = np.frombuffer(text.encode(), np.uint8) if text else np.zeros(0, np.uint8)
    out = np.zeros(len(src) + 3, np.uint8)
    value, exact, _digits, _decimals = copy_decimal_key(src, 0, len(src), out, 2)
    assert bytes(out[2 : 2 + len(src)]) == text.encode()  # copied whatever the verdict
    return value, exact


def test_copy_decimal_key_equals_arrow_float_cast() -> None:
    rng = np.random.default_rng(11)
    texts = list(EDGES)
    for _ in range(20_000):
        whole = str(int(rng.integers(0, 10 ** int(rng.integers(1, 12)))))
        frac = "".join(rng.choice(list("0123456789"), int(rng.integers(0, 12))))
        texts.append(f"{whole}.{frac}" if frac else whole)
    want = pa.array(texts, pa.large_string()).cast(pa.float64()).to_numpy()
    for text, expected in zip(texts, want, strict=True):
        value, exact = _key(text)
        if exact:  # the fast rule answers only when it is sure, and then like Arrow
            assert value == expected, text
        else:  # it may decline only what is not a short plain decimal
            digits = len(text.replace(".", ""))
            assert not PLAIN.fullmatch(text) or digits > 15, text
    assert sum(_key(t)[1] for t in texts) > 10_000  # (the random texts reach 22 digits)
    for text in NOT_FAST:
        assert not _key(text)[1], text


def test_level_columns_equal_sorted_arrow_levels() -> None:
    rng = np.random.default_rng(5)
    words = [*EDGES, *NOT_FAST[:1], "12.5", "0.001"]
    texts, rows, pos = [], [], 0
    n_msg = 60
    for _ in range(400):  # levels in scan order: messages interleaved, sides mixed
        px, sz = words[rng.integers(len(words))], words[rng.integers(len(words))]
        rows.append((int(rng.integers(n_msg)), int(rng.integers(2)), pos, pos + len(px)))
        rows[-1] += (pos + len(px) + 1, pos + len(px) + 1 + len(sz))
        texts.append(f"{px},{sz};")
        pos += len(texts[-1])
    rows.sort(key=lambda r: r[0])  # a scanner appends a message's levels together
    buf = np.frombuffer("".join(texts).encode(), np.uint8)
    lv = _level_rows(buf, rows)
    held = [text_at(len(buf), a, b) for r in rows for a, b in ((r[2], r[3]), (r[4], r[5]))]
    assert any(held) and not all(held)  # strings read from the rows and from the segment
    msg_ok = rng.random(n_msg) < 0.8
    codes = rng.integers(0, 4, n_msg)
    levels = LevelColumns(buf, lv, msg_ok, n_msg)
    text = bytes(buf).decode()
    groups = by_code(codes, msg_ok)
    assert len(groups) > 1  # every group's columns from one pass in row order
    for (code, sel), got in zip(groups, levels.of_groups([s for _c, s in groups]), strict=True):
        assert np.array_equal(sel, np.flatnonzero(msg_ok & (codes == code)))
        for name, col in levels.of(sel).items():  # one group alone: the same columns
            assert np.array_equal(col, got[name]), name
        # the plain construction: levels of `sel`, per message bids then asks, in scan order
        picked = [r for m in sel.tolist() for s in (0, 1) for r in rows if r[0] == m and r[1] == s]
        px = pa.array([text[r[2] : r[3]] for r in picked], pa.large_string())
        sz = pa.array([text[r[4] : r[5]] for r in picked], pa.large_string())
        counts = [sum(1 for r in rows if r[0] == m) for m in sel.tolist()]
        want = BookBatch.from_columns(
            ts_event=np.zeros(len(sel), np.int64),
            ts_recv=np.zeros(len(sel), np.int64),
            level_offsets=np.r_[0, np.cumsum(counts)],
            side=np.array([r[1] for r in picked], np.uint8),
            price_strings=px,
            size_strings=sz,
            venue_symbol="X",
            channel="book",
        )
        assert np.array_equal(got["level_offsets"], want.level_offsets)
        assert np.array_equal(got["side"], want.side)
        assert np.array_equal(got["arena"], want.arena)
        assert np.array_equal(got["arena_offsets"], want.arena_offsets)
        assert np.array_equal(got["price_key"], want.price)
        assert np.array_equal(got["size_key"], want.size)


def _columns(texts: list[tuple[str, str]], n_msg: int, rng: np.random.Generator) -> tuple:
    rows, parts, pos = [], [], 0
    for k, (px, sz) in enumerate(texts):  # message k % n_msg, sides mixed
        rows.append((k % n_msg, int(rng.integers(2)), pos, pos + len(px)))
        rows[-1] += (pos + len(px) + 1, pos + len(px) + 1 + len(sz))
        parts.append(f"{px},{sz};")
        pos += len(parts[-1])
    rows.sort(key=lambda r: r[0])
    buf = np.frombuffer("".join(parts).encode(), np.uint8)
    return LevelColumns(buf, _level_rows(buf, rows), np.ones(n_msg, bool), n_msg)


def _level_rows(buf: np.ndarray, rows: list[tuple]) -> np.ndarray:
    """Level rows as a scanner writes them: the spans, and the bytes of the short ones (the
    last strings of `buf` have fewer than 16 bytes after them: read from `buf`)."""
    lv = np.zeros((len(rows), LV_COLS), np.int64)
    for k, r in enumerate(rows):
        put_level(buf, lv, k, *r)
    return lv


def test_level_words_equal_arrow_decimal_cast() -> None:
    """Each group's words are the lake decimals of its prices then sizes (what the engine's
    cast gives); a group with a value the fast rule declines, or with more decimals than the
    lake's scale, has none (the engine then parses its strings)."""
    rng = np.random.default_rng(17)

    def fast() -> str:  # at most 18 digits (over 2**53 too: no float key, still words)
        whole = str(int(rng.integers(0, 10 ** int(rng.integers(1, 7)))))
        frac = "".join(rng.choice(list("0123456789"), int(rng.integers(0, 13))))
        return f"{whole}.{frac}" if frac else whole

    edges = ["0", "0.000000000001", "9007199254740993", "123456.123456789012", "99999997.00000000"]
    texts = [(fast(), fast()) for _ in range(3000)] + [(e, e) for e in edges]
    n_msg = 40
    levels = _columns(texts, n_msg, rng)
    codes = np.arange(n_msg) % 3
    groups = by_code(codes, np.ones(n_msg, bool))
    for _code, cols in zip(groups, levels.of_groups([s for _c, s in groups]), strict=True):
        n = len(cols["side"])
        prices = pa.LargeStringArray.from_buffers(
            n, pa.py_buffer(cols["arena_offsets"][: n + 1]), pa.py_buffer(cols["arena"])
        )
        sizes = pa.LargeStringArray.from_buffers(
            n, pa.py_buffer(cols["arena_offsets"][n:]), pa.py_buffer(cols["arena"])
        )
        want = pa.concat_arrays([prices, sizes]).cast(DECIMAL)
        assert cols["words"] is not None
        got = pa.Array.from_buffers(DECIMAL, 2 * n, [None, pa.py_buffer(cols["words"])])
        assert got.equals(want)
    for odd in ["5.", "0.0000000000001", "1234567890123456789"]:  # not plain / past the scale
        texts = [(fast(), fast()) for _ in range(50)] + [("1.5", odd)]
        (cols,) = _columns(texts, 5, rng).of_groups([np.arange(5)])
        assert cols["words"] is None, odd


def test_spent_level_rows_give_the_same_columns_and_are_handed_back(monkeypatch) -> None:
    """`spend`: the levels are laid out in spans of messages, the rows read so far handed back
    after each; the columns are those of one pass, and the spent rows read as zeros."""
    rng = np.random.default_rng(23)
    texts = [(f"{rng.integers(1, 99999)}.{rng.integers(0, 99)}", "1.5") for _ in range(20_000)]
    n_msg = 400
    whole = _columns(texts, n_msg, np.random.default_rng(1))
    spent = _columns(texts, n_msg, np.random.default_rng(1))
    codes = np.arange(n_msg) % 3
    groups = [s for _c, s in by_code(codes, np.ones(n_msg, bool))]
    want = whole.of_groups(groups, spend=True)  # rows this small are kept (SPEND_MIN_BYTES)
    assert not (whole.lv == 0).all(axis=1).any()
    monkeypatch.setattr(fastbook, "SPEND_LEVELS", 1000)  # about twenty spans
    monkeypatch.setattr(fastbook, "SPEND_MIN_BYTES", 0)
    got = spent.of_groups(groups, spend=True)
    for w, g in zip(want, got, strict=True):
        for name, col in w.items():
            assert np.array_equal(col, g[name]), name
    assert (spent.lv == 0).all(axis=1).mean() > 0.95  # all but the pages at the edges
