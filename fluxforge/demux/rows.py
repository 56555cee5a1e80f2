"""Trade and quote rows from the byte scanners, as columns.

A venue's trade and ticker messages are declared once (``ObjectShape`` in its
``fluxforge.venues`` module) with output columns named after the tables' columns. The
scanners read them with ``bytescan.flat_object`` into one int64 row per trade / quote in the
layout below (``ROW_LAYOUT`` resolves the declared column names), and ``trades_table`` /
``quotes_table`` turn those rows into the very tables the per-line path builds (the demux
merges both by line index).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
from numba import njit

from fluxforge.demux.bytescan import (
    AHEAD_LINES,
    ENV_AT,
    ENV_KIND,
    ENV_SEQ,
    ENV_TS,
    KIND_MSG,
    LBRACE,
    LV_COLS,
    RBRACE,
    borrowed,
    distinct_spans,
    flat_object,
    grow,
    opt_spans,
    prefetch_span,
    spans,
    ws,
)
from fluxforge.demux.fastbook import checked_symbols
from fluxforge.events import NormalizeError

# row columns: line index, receive ts, daemon seq, then the declared output columns (a text
# column is a byte span: start, end; -1 = absent), then what the scanner adds
R_LINE, R_TS, R_SEQ, R_EVT = 0, 1, 2, 3
R_SYM, R_ID, R_PX, R_SZ, R_SIDE = 4, 6, 8, 10, 12
R_BPX, R_BSZ, R_APX, R_ASZ, R_LAST, R_TYPE = 13, 15, 17, 19, 21, 23
R_KIND = 24  # which declaration read the row (the scanner's own numbering)
R_AUX = 25  # a scanner's own span (e.g. the push's instId), two columns
R_COLS = 27
ROW_LAYOUT = {
    "ts_event": R_EVT,
    "venue_symbol": R_SYM,
    "trade_id": R_ID,
    "price": R_PX,
    "size": R_SZ,
    "side": R_SIDE,
    "bid_px": R_BPX,
    "bid_sz": R_BSZ,
    "ask_px": R_APX,
    "ask_sz": R_ASZ,
    "last": R_LAST,
    "type": R_TYPE,
}


@njit(cache=True)
def payload_rows(buf, ends, todo, env, shape, row_kind):
    """`todo` msg lines (envelope rows `env`: ``bytescan.envelopes``) whose whole payload is
    one object of the declaration `shape` -> one row each (the layout above, R_KIND =
    `row_kind`; R_EVT -1 when the object has no event time, for the venue's rule); other
    lines: no row."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, shape = borrowed(buf), borrowed(shape)
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    no_lv = np.empty((1, LV_COLS), np.int64)
    for i in range(len(ends)):
        k = i + AHEAD_LINES
        if k < len(ends) and todo[k]:
            prefetch_span(buf, env[k, ENV_AT], ends[k])
        if not todo[i] or env[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        p, ts, seq = env[i, ENV_AT], env[i, ENV_TS], env[i, ENV_SEQ]
        if p >= end or buf[p] != LBRACE:
            continue
        rows = grow(rows, n_rows)
        out = rows[n_rows]
        out[:] = -1
        out[R_LINE], out[R_TS], out[R_SEQ], out[R_KIND] = i, ts, seq, row_kind
        p, _seen, _lv, _n = flat_object(buf, p, end, shape, out, 0, no_lv, 0)
        if p < 0:
            continue
        p = ws(buf, p, end)
        if p >= end or buf[p] != RBRACE or p + 1 != end:
            continue
        n_rows += 1
    return rows[:n_rows]


def _text_spans(rows: np.ndarray, col: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of a text column of the rows, an absent text (start -1) as "" at 0."""
    s, e = rows[:, col], rows[:, col + 1]
    has = s >= 0
    return np.where(has, s, 0), np.where(has, e, 0)


def text(buf: np.ndarray, rows: np.ndarray, col: int) -> pa.Array:
    """A text column of the rows, "" where absent."""
    return spans(buf, *_text_spans(rows, col))


def text_symbols(
    buf: np.ndarray, rows: np.ndarray, col: int, symbol_of: Callable[[str], str]
) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array]:
    """``coded_symbols`` of a text column (``text``), coded without each row's text."""
    return coded_symbols(*text_codes(buf, rows, col), symbol_of)


def text_codes(buf: np.ndarray, rows: np.ndarray, col: int) -> tuple[np.ndarray, pa.Array]:
    """``text(buf, rows, col)`` dictionary-encoded: (code of each row, texts by code)."""
    return distinct_spans(buf, *_text_spans(rows, col))


def coded_symbols(
    codes: np.ndarray, labels: pa.Array, symbol_of: Callable[[str], str]
) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array]:
    """Per row label (venue symbol, or whatever ``symbol_of`` reads) given as a code (order of
    first appearance) and the labels by code: (whether the venue's rule accepts it, its code,
    symbols by code, labels by code)."""
    symbols = checked_symbols(labels.to_pylist(), symbol_of, (NormalizeError, TypeError))
    good = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    return good, codes, pa.array(symbols, pa.string()), labels


def trades_table(
    exchange: str,
    buf: np.ndarray,
    rows: np.ndarray,
    symbol: pa.Array,
    venue_symbol: pa.Array,
    sides: tuple[str, ...],
) -> pa.Table:
    """Rows -> the per-line trades layout (``pipeline`` columns of TRADES). `sides`: the
    table's side of each declared side word (1-based in the rows)."""
    n = len(rows)
    side_of = pa.array(("", *sides), pa.string())
    return pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": symbol,
            "ts_event": pa.array(rows[:, R_EVT], pa.int64()),
            "ts_recv": pa.array(rows[:, R_TS], pa.int64()),
            "venue_symbol": venue_symbol,
            "trade_id": text(buf, rows, R_ID),
            "price": spans(buf, rows[:, R_PX], rows[:, R_PX + 1]),
            "size": spans(buf, rows[:, R_SZ], rows[:, R_SZ + 1]),
            "side": side_of.take(pa.array(rows[:, R_SIDE])),
            "seq": pa.array(rows[:, R_SEQ], pa.int64()),
        }
    )


def quotes_table(
    exchange: str, buf: np.ndarray, rows: np.ndarray, symbol: pa.Array, venue_symbol: pa.Array
) -> pa.Table:
    """Rows -> the per-line quotes layout (``pipeline`` columns of QUOTES); absent or empty
    prices are null."""
    n = len(rows)

    def opt(col: int) -> pa.Array:
        return opt_spans(buf, rows[:, col], rows[:, col + 1])

    return pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": symbol,
            "ts_event": pa.array(rows[:, R_EVT], pa.int64()),
            "ts_recv": pa.array(rows[:, R_TS], pa.int64()),
            "venue_symbol": venue_symbol,
            "bid_px": opt(R_BPX),
            "bid_sz": opt(R_BSZ),
            "ask_px": opt(R_APX),
            "ask_sz": opt(R_ASZ),
            "last": opt(R_LAST),
            "seq": pa.array(rows[:, R_SEQ], pa.int64()),
        }
    )
