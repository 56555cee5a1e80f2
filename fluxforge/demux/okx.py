"""Columnar fast path for OKX and Bitget book pushes (the two venues share the shape).

Bitget and OKX book lines are large (hundreds of levels): through the per-line path they
cost an orjson parse, the level checks and, later, the BookMessage -> batch conversion, all
per level in Python. Here one numba pass checks them against exactly the rules of
``fluxforge.venues.okx._books`` / ``fluxforge.venues.bitget._books`` and records byte spans,
as the Coinbase scanner in ``fluxforge.demux`` does. Accepted shape (anything else, including
escapes, JSON numbers for prices/sizes, null, unknown or duplicate keys, an empty data list,
is left to the per-line path)::

    {"ts":N,"src":"..","ex":"okx"|"bitget","seq":N,"kind":"msg","data":
     {"arg":{"channel":"..","instId":".."(,"instType":"..")}, "action":"snapshot"|"update",
      "data":[{"asks":[levels],"bids":[levels],"ts":"ms"|ms,"checksum":int32
               (okx: ,"seqId":int,"prevSeqId":int; bitget: ,"seq":int)}, ...]}}
    level = ["price", "size"(, "string"...)]

The channel decides the rest in Python per distinct (instId, instType, channel): book
channel or not (not: the per-line path), depth, snapshot rule, symbol.
"""

from __future__ import annotations

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
    LBRACKET,
    LV_COLS,
    borrowed,
    distinct_spans,
    eq,
    eq_word,
    flat_object,
    grow,
    int_codes,
    key_at,
    level_capacity,
    next_item,
    next_key,
    prefetch_span,
    read_int,
    str_end,
    ws,
)
from fluxforge.demux.fastbook import (
    FastBook,
    LevelColumns,
    by_code,
    checked_symbols,
    one_code_per_symbol,
)
from fluxforge.demux.registry import Scanner, ScanResult, register
from fluxforge.demux.rows import (
    R_COLS,
    R_EVT,
    R_KIND,
    R_LINE,
    R_SEQ,
    R_SYM,
    R_TS,
    ROW_LAYOUT,
    coded_symbols,
    quotes_table,
    text_codes,
    text_symbols,
    trades_table,
)
from fluxforge.events import CHECKSUM_OKX, NormalizeError
from fluxforge.venues import bitget, okx
from fluxforge.venues.bitget import ticker_event_time
from fluxforge.venues.common import venue_symbol
from fluxforge.venues.okx import CHECKSUM_MAX, CHECKSUM_MIN, ZERO_CHECKSUM_WITH_SEQ_IS_NONE
from fluxforge.wire.envelope import as_bytes
from fluxforge.wire.shape import (
    pack_words,
)

# the action words are the venue's (okx.ACTIONS): code 1 + their index, 0 absent (a snapshot)
_WORDS = tuple(as_bytes(w.encode()) for w in ("arg", "action", "data", "ts", *okx.ACTIONS))
_ACTION_UPDATE = 1 + okx.ACTIONS.index("update")
assert len(okx.ACTIONS) == 2
# msg columns
_M_LINE, _M_TS, _M_SEQ, _M_EVT, _M_CK, _M_HASCK, _M_FINAL, _M_PREV, _M_SEQKEY = range(9)
_M_COLS = 9
# per-line columns (spans of arg values, action code)
_L_CH0, _L_CH1, _L_ID0, _L_ID1, _L_TY0, _L_TY1, _L_ACTION = range(7)
# the push's "arg" object of each venue, declared in its module, read into those columns; the
# scanner takes only args with a channel and an instId (OKX args without one: control lines)
_ARG_LAYOUT = {"channel": _L_CH0, "inst_id": _L_ID0, "inst_type": _L_TY0}
_ARG_NEED = okx.ARG.bits("channel", "instId")
assert bitget.ARG.bits("channel", "instId") == _ARG_NEED


# a book item of each venue, declared in its module; the scanner's message columns
_BOOK_LAYOUT = {
    "asks": -1, "bids": -1, "ts_event": _M_EVT, "checksum": _M_CK, "final_id": _M_FINAL,
    "prev_id": _M_PREV,
}  # fmt: skip
OKX_ITEM = okx.BOOK_ITEM
BITGET_ITEM = bitget.BOOK_ITEM
_ITEM_NEED = OKX_ITEM.bits("asks", "bids", "ts")
_CHECKSUM_BIT = OKX_ITEM.bits("checksum")
_SEQ_BIT = OKX_ITEM.bits("seqId")  # (the same position as Bitget's "seq")
assert BITGET_ITEM.bits("asks", "bids", "ts") == _ITEM_NEED
assert BITGET_ITEM.bits("checksum", "seq") == _CHECKSUM_BIT | _SEQ_BIT


@njit(cache=True)
def _item(buf, p, end, m, msg, row, lv, n_lv, shape, line, ts, seq):
    """One data item object at p ('{') -> message row m (read into the scratch `row`, then
    copied). Returns (position after, lv, n_lv); position -1 when not the plain shape."""
    row[_M_EVT] = 0
    row[_M_CK] = 0
    row[_M_FINAL] = -1
    row[_M_PREV] = -1
    p, seen, lv, n_lv = flat_object(buf, p, end, shape, row, m, lv, n_lv)
    if p < 0 or (seen & _ITEM_NEED) != _ITEM_NEED:
        return -1, lv, n_lv
    ck = row[_M_CK]
    has_ck = (seen & _CHECKSUM_BIT) != 0
    if has_ck and not (CHECKSUM_MIN <= ck <= CHECKSUM_MAX):
        return -1, lv, n_lv
    if has_ck and ck == 0 and (seen & _SEQ_BIT) and ZERO_CHECKSUM_WITH_SEQ_IS_NONE:
        has_ck = False  # 0 with a sequence key: "checksum not computed"
    row[_M_LINE] = line
    row[_M_TS] = ts
    row[_M_SEQ] = seq
    row[_M_CK] = ck if has_ck else 0
    row[_M_HASCK] = 1 if has_ck else 0
    row[_M_SEQKEY] = 1 if (seen & _SEQ_BIT) else 0
    for c in range(_M_COLS):
        msg[m, c] = row[c]
    return p, lv, n_lv


@njit(cache=True)
def _scan(
    buf, ends, todo, env, words, arg, arg_need, item, is_okx, capacity, ch_flat, ch_off,
    ch_kinds, trade, trade_row, ticker,
):  # fmt: skip
    """Every `todo` push line of one venue (from its payload: the envelope rows `env`,
    ``bytescan.envelopes``): book items -> msg rows and levels (``_item``), trade and
    ticker items -> rows in the ``rows`` layout (read by the venue's declarations `trade`,
    `trade_row` (array items; Bitget v1) and `ticker`). The channel (packed words ``ch_flat``,
    ``ch_off`` -> ``ch_kinds``) picks the declaration, so "arg" must come before "data"."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, arg, item = borrowed(buf), borrowed(arg), borrowed(item)
    trade, trade_row, ticker = borrowed(trade), borrowed(trade_row), borrowed(ticker)
    ch_flat, ch_off = borrowed(ch_flat), borrowed(ch_off)
    k_arg, k_action, k_data, k_ts, v_snap, v_update = words
    k_arg, k_action, k_data = borrowed(k_arg), borrowed(k_action), borrowed(k_data)
    k_ts, v_snap, v_update = borrowed(k_ts), borrowed(v_snap), borrowed(v_update)
    n = len(ends)
    ok = np.zeros(n, np.bool_)
    info = np.full((n, 7), -1, np.int64)
    info_rows = borrowed(info)  # (`info` is returned: alive to the end)
    row = np.empty(_M_COLS, np.int64)
    msg = np.empty((1024, _M_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, LV_COLS), np.int64)
    n_lv = 0
    rows = np.empty((1024, R_COLS), np.int64)
    n_rows = 0
    no_lv = np.empty((1, LV_COLS), np.int64)  # (no level lists in trade / ticker items)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:
            prefetch_span(buf, env[k, ENV_AT], ends[k])
        if not todo[i] or env[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        p, ts, seq = env[i, ENV_AT], env[i, ENV_TS], env[i, ENV_SEQ]
        if p >= end or buf[p] != LBRACE:
            continue
        p = ws(buf, p + 1, end)
        mark_lv, mark_msg, mark_rows = n_lv, n_msg, n_rows
        ch_kind = -1
        seen = 0
        action = 0  # 0 absent, 1 + index in okx.ACTIONS
        bad = False
        while True:
            ks, ke, p = key_at(buf, p, end)
            if p < 0:
                bad = True
                break
            if eq(buf, ks, ke, k_arg) and not seen & 1:
                seen |= 1
                if p >= end or buf[p] != LBRACE:
                    bad = True
                    break
                p, a_seen, _lv, _n = flat_object(buf, p, end, arg, info_rows[i], 0, no_lv, 0)
                if p < 0 or (a_seen & arg_need) != arg_need:
                    bad = True
                    break
                for c in range(len(ch_kinds)):
                    if eq_word(buf, info[i, 0], info[i, 1], ch_flat, ch_off, c):
                        ch_kind = ch_kinds[c]
                        break
            elif eq(buf, ks, ke, k_action) and not seen & 2:
                seen |= 2
                q = str_end(buf, p, end)
                if q < 0:
                    bad = True
                    break
                if eq(buf, p + 1, q, v_snap):
                    action = 1
                elif eq(buf, p + 1, q, v_update):
                    action = 2
                else:
                    bad = True
                    break
                p = q + 1
            elif eq(buf, ks, ke, k_data) and not seen & 4:
                seen |= 4
                if p >= end or buf[p] != LBRACKET:
                    bad = True
                    break
                p = ws(buf, p + 1, end)
                if ch_kind < 0:  # no "arg" before, or a channel without a declaration
                    bad = True
                    break
                while True:  # one item (an empty list: the per-line path)
                    if p >= end:
                        bad = True
                        break
                    c = buf[p]
                    if ch_kind == _CH_BOOK:
                        if c != LBRACE:
                            bad = True
                            break
                        if n_msg == len(msg):  # (a call per row costs reference counts)
                            msg = grow(msg, n_msg)
                        p, lv, n_lv = _item(
                            buf, p, end, n_msg, msg, row, lv, n_lv, item, i, ts, seq
                        )
                        n_msg += 1
                    else:
                        if n_rows == len(rows):  # (a call per row costs reference counts)
                            rows = grow(rows, n_rows)
                        out = rows[n_rows]
                        out[:] = -1
                        out[R_LINE], out[R_TS], out[R_SEQ] = i, ts, seq
                        out[R_KIND] = ch_kind
                        if ch_kind == _CH_TRADE and c == LBRACE:
                            p, _s, _lv, _n = flat_object(buf, p, end, trade, out, 0, no_lv, 0)
                        elif ch_kind == _CH_TRADE and c == LBRACKET and not is_okx:
                            p, _s, _lv, _n = flat_object(buf, p, end, trade_row, out, 0, no_lv, 0)
                        elif ch_kind == _CH_TICKER and c == LBRACE:
                            p, _s, _lv, _n = flat_object(buf, p, end, ticker, out, 0, no_lv, 0)
                            out[R_EVT] = ticker_event_time(out[R_EVT], ts)  # (OKX: required)
                        else:
                            p = -1
                        n_rows += 1
                    if p < 0:
                        bad = True
                        break
                    p, done = next_item(buf, p, end)
                    if p < 0:
                        bad = True
                        break
                    if done:
                        break
                if bad:
                    break
            elif not is_okx and eq(buf, ks, ke, k_ts) and not seen & 8:
                seen |= 8  # Bitget v2's push time: ignored by the normalizer
                _v, p = read_int(buf, p, end)
                if p < 0:
                    bad = True
                    break
            else:
                bad = True
                break
            p, done = next_key(buf, p, end)
            if p < 0:
                bad = True
                break
            if done:
                break
        if not bad:
            p = ws(buf, p, end)
            bad = (seen & 5) != 5 or p >= end or buf[p] != 125 or p + 1 != end
        if bad:
            n_lv, n_msg, n_rows = mark_lv, mark_msg, mark_rows
            continue
        info[i, 6] = action
        ok[i] = True
    return ok, info, msg[:n_msg], lv[:n_lv], rows[:n_rows]


_CH_BOOK, _CH_TRADE, _CH_TICKER = 0, 1, 2


def _channel_table(book: dict, trade: tuple[str, ...], ticker: str) -> tuple:
    names = [*book, *trade, ticker]
    kinds = [_CH_BOOK] * len(book) + [_CH_TRADE] * len(trade) + [_CH_TICKER]
    return (*pack_words(names), np.array(kinds, np.int64))


# per venue: channel words and kinds, then the declarations of trade, trade row, ticker items
_DECLARED = {
    "okx": (
        *_channel_table(okx.BOOK_CHANNELS, okx.TRADE_CHANNELS, okx.TICKER_CHANNEL),
        okx.TRADE.args_for(ROW_LAYOUT),
        bitget.TRADE_ROW.args_for(ROW_LAYOUT),  # (no array items on OKX: never read)
        okx.TICKER.args_for(ROW_LAYOUT),
    ),
    "bitget": (
        *_channel_table(bitget.BOOK_DEPTH, (bitget.TRADE_CHANNEL,), bitget.TICKER_CHANNEL),
        bitget.TRADE.args_for(ROW_LAYOUT),
        bitget.TRADE_ROW.args_for(ROW_LAYOUT),
        bitget.TICKER.args_for(ROW_LAYOUT),
    ),
}


def fast_okx_bitget_books(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    env: np.ndarray,
) -> ScanResult:
    """OKX or Bitget pushes among the `todo` lines: books -> FastBooks per instrument, trades
    and tickers -> rows as columns (Bitget trade snapshots: control lines), and the masks of
    the lines taken; every other line is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    is_okx = exchange == "okx"
    ok, info, msg, lv, rows = _scan(
        buf, ends, todo, env, _WORDS,
        (okx.ARG if is_okx else bitget.ARG).args_for(_ARG_LAYOUT), _ARG_NEED,
        (OKX_ITEM if is_okx else BITGET_ITEM).args_for(_BOOK_LAYOUT), is_okx,
        level_capacity(starts, ends), *_DECLARED[exchange],
    )  # fmt: skip
    if not ok.any():
        return ScanResult(none)
    out = _books(exchange, buf, n, info, msg, lv)
    if len(rows):
        _rows(exchange, buf, info, rows, out)
    return out


def _rows(
    exchange: str, buf: np.ndarray, info: np.ndarray, rows: np.ndarray, out: ScanResult
) -> None:
    """Trade and ticker rows of the lines whose symbols the venue's rules accept -> `out`."""
    is_okx = exchange == "okx"
    line = rows[:, R_LINE]
    if is_okx:  # the item's instId
        good, codes, symbols, raws = text_symbols(buf, rows, R_SYM, okx.symbol_of)
    else:  # the push's instId and instType, numbered as the pairs first appear
        push = info[line]
        inst, insts = text_codes(buf, push, 2)
        ty, tys = text_codes(buf, push, 4)
        has_type = push[:, 4] >= 0
        ty = np.where(has_type, ty, len(tys))  # (absent: a code of its own)
        codes, first = int_codes(inst * (len(tys) + 1) + ty)
        inst_text, ty_text = insts.to_pylist(), tys.to_pylist()
        raw_text = [inst_text[inst[j]] for j in first]
        # instId NUL instType; no NUL when the push has no instType (an empty one differs)
        labels = [
            raw + ("\x00" + ty_text[ty[j]] if has_type[j] else "")
            for raw, j in zip(raw_text, first, strict=True)
        ]
        good, codes, symbols, _labels = coded_symbols(
            codes, pa.array(labels, pa.string()), _bitget_symbol
        )
        raws = pa.array(raw_text, pa.string())
    taken = np.zeros(len(out.taken), dtype=bool)
    taken[line] = True
    taken[line[~good]] = False  # a line is taken whole or not at all
    keep = taken[line]
    if not is_okx:  # trade snapshots: the history before the subscription, control lines
        snap = (rows[:, R_KIND] == _CH_TRADE) & (info[line, 6] != _ACTION_UPDATE) & keep
        if snap.any():
            control = np.zeros(len(out.taken), dtype=bool)
            control[line[snap]] = True
            out.control = control if out.control is None else out.control | control
            taken[line[snap]] = False
            keep &= ~snap
    out.taken |= taken
    sides = okx.TRADE_SIDES if is_okx else bitget.TRADE_SIDES
    for kind in (_CH_TRADE, _CH_TICKER):
        sel = np.flatnonzero(keep & (rows[:, R_KIND] == kind))
        if not len(sel):
            continue
        r = rows[sel]
        take = pa.array(codes[sel], pa.int64())
        if kind == _CH_TRADE:
            table = trades_table(exchange, buf, r, symbols.take(take), raws.take(take), sides)
            out.trades.append((r[:, R_LINE].copy(), table))
        else:
            table = quotes_table(exchange, buf, r, symbols.take(take), raws.take(take))
            out.quotes.append((r[:, R_LINE].copy(), table))


def _bitget_symbol(label: str) -> str:
    raw, sep, inst_type = label.partition("\x00")
    return bitget.venue_symbol_to_symbol(
        venue_symbol(raw, "bitget instId"), inst_type if sep else bitget.SPOT_INST_TYPE
    )


def _books(
    exchange: str,
    buf: np.ndarray,
    n: int,
    info: np.ndarray,
    msg: np.ndarray,
    lv: np.ndarray,
) -> ScanResult:
    """The book lines among the `ok` lines -> FastBooks per instrument."""
    none = np.zeros(n, dtype=bool)
    is_okx = exchange == "okx"
    if not len(msg):
        return ScanResult(none)
    channels = okx.BOOK_CHANNELS if is_okx else bitget.BOOK_DEPTH
    lines = np.unique(msg[:, _M_LINE])
    # label of a line: [channel, instId, instType] (absent instType: no third part), numbered
    # as the labels first appear
    ch, chs = distinct_spans(buf, info[lines, 0], info[lines, 1])
    inst, insts = distinct_spans(buf, info[lines, 2], info[lines, 3])
    has_type = info[lines, 4] >= 0
    ty, tys = text_codes(buf, info[lines], 4)
    ty = np.where(has_type, ty, len(tys))  # (absent: a code of its own)
    pair, _first = int_codes(ch * len(insts) + inst)
    codes, first = int_codes(pair * (len(tys) + 1) + ty)
    codes_line = np.full(n, -1, np.int64)
    codes_line[lines] = codes
    ch_text, inst_text, ty_text = chs.to_pylist(), insts.to_pylist(), tys.to_pylist()
    labels = [
        [ch_text[ch[j]], inst_text[inst[j]]] + ([ty_text[ty[j]]] if has_type[j] else [])
        for j in first
    ]

    def symbol_of(parts: list[str]) -> str | None:
        if parts[0] not in channels:
            return None  # not a book channel: the per-line path
        if is_okx:
            return okx.symbol_of(parts[1])
        raw = venue_symbol(parts[1], "bitget instId")
        return bitget.venue_symbol_to_symbol(
            raw, parts[2] if len(parts) > 2 else bitget.SPOT_INST_TYPE
        )

    symbols = checked_symbols(labels, symbol_of, (NormalizeError, TypeError))
    msg_line = msg[:, _M_LINE]
    msg_code = codes_line[msg_line]
    msg_ok = np.array([s is not None for s in symbols], dtype=bool)[msg_code]
    # one batch carries one venue symbol and one channel
    msg_ok = one_code_per_symbol(msg_code, msg_ok, symbols)
    line_ok = np.zeros(n, dtype=bool)
    line_ok[msg_line[msg_ok]] = True
    line_ok[msg_line[~msg_ok]] = False
    if not msg_ok.any():
        return ScanResult(none)
    groups = by_code(msg_code, msg_ok)
    levels = LevelColumns(buf, lv, msg_ok, len(msg)).of_groups(
        [sel for _c, sel in groups], spend=True
    )
    action = info[msg_line, 6]
    out: dict[tuple[str, str], FastBook] = {}
    for (c, sel), level_cols in zip(groups, levels, strict=True):
        channel, raw, sym = labels[c][0], labels[c][1], symbols[c]
        assert sym is not None
        snapshot = action[sel] != _ACTION_UPDATE  # no action: a whole snapshot (okx.ACTIONS)
        if not is_okx and bitget.book_is_snapshot(channel, okx.ACTIONS[_ACTION_UPDATE - 1]):
            snapshot = np.ones(len(sel), dtype=bool)  # a top-N channel: always whole
        out[(exchange, sym)] = FastBook(
            exchange=exchange,
            symbol=sym,
            venue_symbol=raw,
            channel=channel,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, _M_EVT],
            ts_recv=msg[sel, _M_TS],
            seq=msg[sel, _M_SEQ],
            is_snapshot=snapshot,
            final_id=msg[sel, _M_FINAL],
            prev_id=msg[sel, _M_PREV] if is_okx else None,
            checksum=msg[sel, _M_CK],
            has_checksum=msg[sel, _M_HASCK] == 1,
            checksum_kind=CHECKSUM_OKX,
            depth=int(channels[channel]),
            **level_cols,
        )
    return ScanResult(line_ok, books=out)


register(Scanner("okx", ("okx",), fast_okx_bitget_books))
register(Scanner("bitget", ("bitget",), fast_okx_bitget_books))
