"""Columnar fast paths for Binance combined-stream frames and REST depth snapshots.

One numba pass per line shape reads the event objects by the venue's own declarations
(``fluxforge.venues.binance``: ``DEPTH_UPDATE``, ``SNAPSHOT``, ``BOOK_TICKER``, ``TRADE``, read
per line by the same declarations) and records byte spans; anything else (escapes, JSON
numbers for prices/sizes, null, unknown or duplicate keys...) is left to the per-line path,
which gives it the normalizer's own treatment and quarantine reason. Shapes taken (any key
order):

- ``depthUpdate`` -> FastBook per instrument (below), together with the REST depth snapshots
  (``kind "rest"``, url ``.../depth?symbol=...``: ``{"lastUpdateId","E"?,"T"?,"bids","asks"}``)
  of the same instrument, in line order;
- ``bookTicker`` -> quote rows and TopOfBook reports as columns (``FastTickers``);
- ``aggTrade``/``trade`` -> trade rows as columns (``fast_trades_of``);
- ``24hrTicker`` -> quote rows as columns (``fast_tickers_24h``);
- control events (kline, markPriceUpdate, ...) that are surely valid JSON -> counted as
  control (``control_lines``).

The demux calls the scanner once per Binance exchange present, with that exchange's lines (found
by the demux's one envelope pass); ``_frames`` finds each line's event span: the payload of a
combined-stream wrapper (``binance.COMBINED``) or the bare payload. That span is one event
object or, on the all-market streams (``!ticker@arr``, ``!markPrice@arr``...), an array of
them: a bookTicker, trade, 24hrTicker or control scanner takes such a line when it takes every
event of the array (one row per event, in order), else the line stays for the per-line path
(which keeps or refuses a line whole).

depthUpdate shape::

    {"ts":N,"src":"..","ex":"binance|binanceus|binanceusdm|binancecoinm","seq":N,"kind":"msg",
     "data":{"stream":"..","data":{"e":"depthUpdate","E":ms,"T":int,"s":"SYM","U":int,
             "u":int,"pu":int,"ps":"..","b":[levels],"a":[levels]}}}
    level = ["price", "size"(, "string"...)]

A stream that names a partial-depth stream (``<sym>@depth5``...) is left to the per-line path
(it is a top-N snapshot there). Futures need ``pu`` (chain binance_futures); spot ignores it
(chain binance_spot, prev id -1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

from fluxforge.demux.bytescan import (
    AHEAD_LINES,
    ENV_AT,
    ENV_EX,
    ENV_KIND,
    ENV_SEQ,
    ENV_TS,
    ENV_URL,
    KIND_MSG,
    KIND_REST,
    LBRACE,
    LBRACKET,
    LV_COLS,
    RBRACE,
    RBRACKET,
    borrowed,
    control_object_end,
    declared_keys,
    distinct_spans,
    flat_object,
    grow,
    has_required,
    int_codes,
    key_at,
    key_index,
    level_capacity,
    next_item,
    opt_spans,
    prefetch_span,
    read_envelopes,
    skip_container,
    spans,
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
from fluxforge.events import NormalizeError, TopOfBook
from fluxforge.venues import binance
from fluxforge.venues.binance import FUTURES, event_time
from fluxforge.wire.envelope import as_bytes
from fluxforge.wire.shape import pack_words

# msg columns: line, ts, seq, E ns, first, final, prev, stream s/e, symbol s/e, form (a
# depthUpdate object, a partial-depth snapshot object {lastUpdateId, bids, asks}, or a REST
# depth snapshot: the url span instead of the stream)
_M_FORM = 11
_M_COLS = 12
_FORM_UPDATE, _FORM_PARTIAL, _FORM_REST = range(3)


# frame columns: ts, seq, stream start/end (-1: a bare frame), event object (or array of event
# objects) start/end
_F_TS, _F_SEQ, _F_S0, _F_S1, _F_D0, _F_D1 = range(6)
# the venue's combined-stream wrapper (``binance.COMBINED``) read into: stream s/e, data s/e
_COMBINED = binance.COMBINED.args_for({"stream": 0, "data": 2})
# the wrapper as the venue writes it, its keys in their declared order and no spaces: the bytes
# before the stream name, and from the name's closing quote to the event
_STREAM_KEY, _DATA_KEY = binance.COMBINED.names
_WRAP_HEAD = np.frombuffer(f'{{"{_STREAM_KEY}":"'.encode(), np.uint8)
_WRAP_MID = np.frombuffer(f'","{_DATA_KEY}":'.encode(), np.uint8)


@njit(cache=True)
def _compact_frame(buf, ds, end, head, mid):
    """A payload at ds (its line ending at `end`) written exactly as the venue writes a
    combined-stream frame (`head` stream `mid` event, then the wrapper's and the envelope's
    closing braces) -> (stream start, end, event start, end), else all -1. The event is taken
    to end where the wrapper does, without reading it: the event parsers judge [start, end)
    exactly, so a frame with anything after its event (another key, a second "data") fails
    there and goes to the per-line path, as the full wrapper read would send it."""
    n_h, n_m = len(head), len(mid)
    de = end - 2  # the wrapper's closing brace
    ok = de - ds > n_h + n_m + 1 and buf[end - 1] == RBRACE and buf[de] == RBRACE
    j = 0
    while ok and j < n_h:
        ok = buf[ds + j] == head[j]
        j += 1
    q = str_end(buf, ds + n_h - 1, de) if ok else -1
    ok = q >= 0 and q + n_m < de
    j = 0
    while ok and j < n_m:
        ok = buf[q + j] == mid[j]
        j += 1
    v = q + n_m
    c = buf[v] if ok else 0
    last = buf[de - 1] if ok else 0
    ok = ok and ((c == LBRACE and last == RBRACE) or (c == LBRACKET and last == RBRACKET))
    len(buf), len(head), len(mid)  # (arrays live to the one exit: see bytescan's module doc)
    if not ok:
        return -1, -1, -1, -1
    return ds + n_h, q, v, de


@njit(cache=True)
def _frames(buf, ends, todo, env, wrapper, head, mid):
    """Per `todo` msg line of one exchange: ts, seq (from its envelope row in `env`,
    ``bytescan.envelopes``) and the span of its event (an object) or events (an array of
    objects: the all-market streams), either inside a combined-stream frame (the declaration
    `wrapper`, any key order) or as the whole payload (a bare frame of a single-stream
    connection: an array, or an object without the wrapper's required keys). Rows of other
    lines: -1. The event parsers below then judge that span [start, end) only
    (``_first_event`` / ``_after_event``), so a frame written as the venue writes it
    (`head` stream `mid` event: ``_compact_frame``) and a bare array are not read past their
    start here (60 MB of documented Binance shapes: 40 -> 23 ms)."""
    buf, wrapper = borrowed(buf), borrowed(wrapper)
    head, mid = borrowed(head), borrowed(mid)
    n = len(ends)
    fr = np.full((n, 6), -1, np.int64)
    out = np.empty(4, np.int64)
    no_lv = np.empty((1, LV_COLS), np.int64)  # (no level lists in the wrapper)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:  # (the frame's head, and its tail: ``_compact_frame``)
            prefetch_span(buf, env[k, ENV_AT], env[k, ENV_AT] + 64)
            prefetch_span(buf, ends[k] - 2, ends[k])
        if not todo[i] or env[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        ds, ts, seq = env[i, ENV_AT], env[i, ENV_TS], env[i, ENV_SEQ]
        if ds >= end:
            continue
        ss = se = -1
        if buf[ds] == LBRACKET:  # a bare array of events
            if buf[end - 1] == RBRACE and buf[end - 2] == RBRACKET:
                p = de = end - 1  # (the events' parser judges the array to its end)
            else:
                p = de = skip_container(buf, ds, end)
            if p < 0:
                continue
        elif buf[ds] == LBRACE:
            ss, se, a, b = _compact_frame(buf, ds, end, head, mid)
            if ss >= 0:  # the usual combined-stream frame
                p, ds, de = end - 1, a, b
            else:
                ks, ke, _v = key_at(buf, ws(buf, ds + 1, end), end)
                if ks >= 0 and key_index(buf, ks, ke, wrapper) >= 0:  # a combined-stream frame
                    out[:] = -1
                    p, _seen, _lv, _n = flat_object(buf, ds, end, wrapper, out, 0, no_lv, 0)
                    if p < 0:
                        continue  # not as declared: the per-line path judges it
                    ss, se, ds, de = out[0], out[1], out[2], out[3]
                else:
                    # a bare frame, unless the payload carries the wrapper's keys after
                    # another (then the per-line path judges it)
                    p, seen = declared_keys(buf, ds, end, wrapper)
                    if p < 0 or has_required(wrapper, seen):
                        continue
                    de = p
        else:
            continue
        p = ws(buf, p, end)
        if p >= end or buf[p] != RBRACE or p + 1 != end:
            continue
        fr[i, _F_TS] = ts
        fr[i, _F_SEQ] = seq
        fr[i, _F_S0] = ss
        fr[i, _F_S1] = se
        fr[i, _F_D0] = ds
        fr[i, _F_D1] = de
    return fr


@njit(cache=True)
def _first_event(buf, s, e):
    """A frame's event span [s, e) -> (position of its first event object's '{', whether the
    frame holds an array of events); the position is -1 when an array's first item is not an
    object (an empty array too: the per-line path takes those)."""
    if buf[s] == LBRACE:
        return s, False
    p = ws(buf, s + 1, e)
    return (p if p < e and buf[p] == LBRACE else -1), True


@njit(cache=True)
def _after_event(buf, q, e, is_array):
    """After an event object that ends at q: (position of the next event's '{', 0), (e, 1)
    when the frame's events end exactly there, or (-1, -1) when the frame is not a plain
    object or array of objects."""
    if q < 0 or not is_array:
        return (q, 1) if q == e else (-1, -1)
    p, done = next_item(buf, q, e)
    if p < 0 or (done and p != e) or (not done and buf[p] != LBRACE):
        return -1, -1
    return p, done


def envelopes_of(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    env: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(envelope rows, `todo` lines of `exchange`): `env` and `todo` as the demux gives them
    (``todo`` already that exchange's lines), or, called without `env` (tests), read here."""
    if env is not None:
        return env, todo
    env = read_envelopes(buf, starts, ends, todo, (exchange,))
    return env, todo & (env[:, ENV_EX] == 0)


def frames_of(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    env: np.ndarray | None = None,
) -> np.ndarray:
    """``_frames`` of the `todo` lines of `exchange` (one pass that every event scanner below
    reuses); `env`: ``envelopes_of``."""
    env, todo = envelopes_of(exchange, buf, starts, ends, todo, env)
    return _frames(buf, ends, todo, env, _COMBINED, _WRAP_HEAD, _WRAP_MID)


# the venue's depthUpdate and depth snapshot declarations (``binance.DEPTH_UPDATE`` /
# ``binance.SNAPSHOT``) read into the msg columns
_DEPTH_LAYOUT = {
    "ts_event": 3, "first_id": 4, "final_id": 5, "prev_id": 6, "venue_symbol": 9, "bids": -1,
    "asks": -1,
}  # fmt: skip
_SNAPSHOT = binance.SNAPSHOT.args_for(_DEPTH_LAYOUT)


@njit(cache=True)
def _scan(fr, buf, ends, todo, env, shape, snap_shape, capacity):
    """The `todo` depth lines of one exchange, in line order, in one pass: depthUpdate (and
    partial-depth snapshot) objects of the frames `fr` (``_frames``) by the declaration
    `shape` (`snap_shape`), and REST depth snapshots (``binance.SNAPSHOT``, url and payload
    from the envelope rows `env`) -> (lines taken, msg rows, their levels). A REST row has
    form ``_FORM_REST`` and the url span in columns 7/8 instead of the stream (9/10 unused);
    the rows and the levels come out in line order, so no merge by line follows."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, shape, snap_shape = borrowed(buf), borrowed(shape), borrowed(snap_shape)
    n = len(fr)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, _M_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, LV_COLS), np.int64)
    n_lv = 0
    out = np.zeros(_M_COLS, np.int64)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:
            prefetch_span(buf, env[k, ENV_AT], ends[k])
        if not todo[i]:
            continue
        mark = n_lv
        out[:] = -1  # (no "E": binance.event_time below)
        if env[i, ENV_KIND] == KIND_REST:
            end = ends[i]
            p, url = env[i, ENV_AT], env[i, ENV_URL]
            if p >= end or buf[p] != LBRACE:
                continue
            p, _seen, lv, n_lv = flat_object(buf, p, end, snap_shape, out, n_msg, lv, n_lv)
            if p >= 0:
                p = ws(buf, p, end)
            if p < 0 or p >= end or buf[p] != RBRACE or p + 1 != end:
                n_lv = mark
                continue
            out[7], out[8] = url + 1, str_end(buf, url, end)
            out[_M_FORM] = _FORM_REST
        else:
            if fr[i, _F_D0] < 0 or buf[fr[i, _F_D0]] != LBRACE:
                continue  # (no venue sends depth events in an array)
            out[7], out[8] = fr[i, _F_S0], fr[i, _F_S1]
            end = fr[i, _F_D1]
            out[_M_FORM] = _FORM_UPDATE
            p, _seen, lv, n_lv = flat_object(buf, fr[i, _F_D0], end, shape, out, n_msg, lv, n_lv)
            if p != end and fr[i, _F_S0] >= 0:  # a spot partial-depth push (combined stream)
                n_lv = mark
                out[:] = -1
                out[7], out[8] = fr[i, _F_S0], fr[i, _F_S1]
                out[_M_FORM] = _FORM_PARTIAL
                p, _seen, lv, n_lv = flat_object(
                    buf, fr[i, _F_D0], end, snap_shape, out, n_msg, lv, n_lv
                )
            if p != end:
                n_lv = mark
                continue
        msg = grow(msg, n_msg)
        msg[n_msg, :] = out
        msg[n_msg, 0] = i
        msg[n_msg, 1] = env[i, ENV_TS]
        msg[n_msg, 2] = env[i, ENV_SEQ]
        msg[n_msg, 3] = event_time(out[3], env[i, ENV_TS])
        n_msg += 1
        ok[i] = True
    return ok, msg[:n_msg], lv[:n_lv]


def _rest_raw_symbol(url: str) -> str | None:
    """The venue symbol ``venues.binance`` reads from a REST depth url, None when that url is
    not a depth snapshot it accepts (then the per-line path judges the line)."""
    try:
        return binance.rest_depth_symbol(url) if binance.rest_is_depth(url) else None
    except (NormalizeError, TypeError, ValueError):
        return None


def fast_binance_depth(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    frames: np.ndarray | None = None,
    env: np.ndarray | None = None,
) -> ScanResult:
    """Binance depthUpdate lines (and REST depth snapshots) of `exchange` among the `todo`
    lines -> FastBooks per instrument and the mask of the lines taken; every other line is
    left to the per-line path. `frames`: ``frames_of``, `env`: ``envelopes_of``."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    capacity = level_capacity(starts, ends)
    env, todo = envelopes_of(exchange, buf, starts, ends, todo, env)
    if frames is None:
        frames = frames_of(exchange, buf, starts, ends, todo, env)
    update = binance.DEPTH_UPDATE[exchange in FUTURES].args_for(_DEPTH_LAYOUT)
    ok, msg, lv = _scan(frames, buf, ends, todo, env, update, _SNAPSHOT, capacity)
    if not len(msg):
        return ScanResult(none)
    form = msg[:, _M_FORM]
    is_rest = form == _FORM_REST
    live = np.flatnonzero(~is_rest)  # the websocket rows
    live_msg = msg[live]
    # instrument = (venue name, channel): "depth" for diff depth (and REST snapshots), "depthN"
    # for a partial-depth stream's whole-top-N pushes (the venue's rule: PARTIAL_DEPTH_RE)
    s_codes, streams = distinct_spans(buf, live_msg[:, 7], live_msg[:, 8])
    partial = [binance.PARTIAL_DEPTH_RE.fullmatch(x) for x in streams.to_pylist()]
    s_depth = np.array([int(m.group(2)) if m else 0 for m in partial] + [0], np.int64)
    s_name = [m.group(1).upper() if m else "" for m in partial]
    s_channel = [f"depth{m.group(2)}" if m else binance.DEPTH_CHANNEL for m in partial]
    m_form = form[live]
    # a snapshot object belongs only to a partial-depth stream (elsewhere the normalizer
    # refuses it); its venue name is the stream's, a depthUpdate's is its "s"
    live_ok = (m_form == _FORM_UPDATE) | (s_depth[s_codes] > 0)
    live_ok &= (m_form != _FORM_UPDATE) | binance.ids_in_order(live_msg[:, 4], live_msg[:, 5])
    # a row's venue name: its "s" for a depthUpdate, its stream's for a snapshot object; the
    # instruments are numbered as the (name, channel) pairs first appear
    r_codes, r_texts = distinct_spans(buf, live_msg[:, 9], live_msg[:, 10])
    names: dict[str, int] = {}
    r_name = np.array([names.setdefault(x, len(names)) for x in r_texts.to_pylist()], np.int64)
    s_named = np.array([names.setdefault(x, len(names)) for x in s_name], np.int64)
    channels: dict[str, int] = {}
    s_chan = np.array([channels.setdefault(x, len(channels)) for x in s_channel], np.int64)
    name = np.where(m_form == _FORM_UPDATE, r_name[r_codes], s_named[s_codes])
    chan = s_chan[s_codes]
    live_codes, first = int_codes(name * len(channels) + chan)
    name_text, chan_text = list(names), list(channels)
    labels = [[name_text[name[j]], chan_text[chan[j]]] for j in first]
    codes = np.zeros(len(msg), np.int64)
    msg_ok = np.zeros(len(msg), dtype=bool)
    codes[live], msg_ok[live] = live_codes, live_ok
    if is_rest.any():
        # REST depth snapshots join the updates of their instrument (the rows are in line
        # order already)
        rest = np.flatnonzero(is_rest)
        code_of = {(r, ch): c for c, (r, ch) in enumerate(labels)}
        url_codes, urls = distinct_spans(buf, msg[rest, 7], msg[rest, 8])
        url_code = []
        for url in urls.to_pylist():
            rest_raw = _rest_raw_symbol(url)
            if rest_raw is None:
                url_code.append(-1)
                continue
            label = (rest_raw, binance.DEPTH_CHANNEL)
            if label not in code_of:
                code_of[label] = len(labels)
                labels.append(list(label))
            url_code.append(code_of[label])
        rest_codes = np.array(url_code, dtype=np.int64)[url_codes]
        codes[rest], msg_ok[rest] = np.maximum(rest_codes, 0), rest_codes >= 0
    msg_line = msg[:, 0]
    symbols = checked_symbols(
        [r for r, _ch in labels], binance.symbol_of, (NormalizeError, TypeError)
    )
    msg_ok &= np.array([s is not None for s in symbols] + [False], dtype=bool)[
        np.minimum(codes, len(labels))
    ]
    # one book per symbol: a symbol with diff and partial depth (or two venue names) is left
    # to the per-line path
    msg_ok = one_code_per_symbol(codes, msg_ok, symbols)
    ok[msg_line[~msg_ok]] = False
    if not ok.any():
        return ScanResult(none)
    groups = by_code(codes, msg_ok)
    levels = LevelColumns(buf, lv, msg_ok, len(msg)).of_groups(
        [sel for _c, sel in groups], spend=True
    )
    out: dict[tuple[str, str], FastBook] = {}
    for (c, sel), level_cols in zip(groups, levels, strict=True):
        sym = symbols[c]
        venue_name, channel = labels[c]
        assert sym is not None
        diff = channel == binance.DEPTH_CHANNEL
        none_ids = np.full(len(sel), -1, np.int64)
        out[(exchange, sym)] = FastBook(
            exchange=exchange,
            symbol=sym,
            venue_symbol=venue_name,
            channel=channel,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, 3],
            ts_recv=msg[sel, 1],
            seq=msg[sel, 2],
            is_snapshot=is_rest[sel] if diff else np.ones(len(sel), dtype=bool),
            final_id=msg[sel, 5],
            first_id=msg[sel, 4] if diff else none_ids,
            prev_id=msg[sel, 6] if diff else none_ids,
            from_rest=is_rest[sel] if is_rest[sel].any() else None,
            chain=binance.chain_of(exchange) if diff else None,
            depth=0 if diff else int(channel[len(binance.DEPTH_CHANNEL) :]),
            **level_cols,
        )
    return ScanResult(ok, books=out)


# ---------------------------------------------------------------- bookTicker
# A bookTicker line gives one quote row and one TopOfBook. The scanner checks the line and
# records its spans; the rows become Arrow columns (``FastTickers``) that the demux merges with
# the per-line path's quotes by line index, and TopOfBook objects are only built when
# ``DemuxResult.tops`` is read (no orjson, no normalizer, no Python object per row).
# the venue's bookTicker declaration (``binance.BOOK_TICKER``) read into the info columns: u,
# E ns, s s/e, b s/e, B s/e, a s/e, A s/e, stream s/e, ts, seq, line
_TICKER_COLUMNS = {
    "update_id": 0, "ts_event": 1, "venue_symbol": 2, "bid_px": 4, "bid_sz": 6, "ask_px": 8,
    "ask_sz": 10,
}  # fmt: skip
_BOOK_TICKER = binance.BOOK_TICKER.args_for(_TICKER_COLUMNS)
_TICKER_LAYOUT = (17, 16, 14, 15, 12, 1, -1)
_NO_IDS = np.zeros(1, np.int64)


@njit(cache=True)
def _scan_events(fr, buf, todo, shape, id_bits, layout):
    """The framed events of one declared ``ObjectShape`` -> one info row per event of the
    lines taken (a line of an array: every event of that shape, else none), in the column
    `layout` (n_cols, line, ts, seq, stream start (end next), event time or -1, event kind or
    -1: then the kind k also needs the keys id_bits[k - 1])."""
    n_cols, c_line, c_ts, c_seq, c_stream, c_evt, c_kind = layout
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, shape = borrowed(buf), borrowed(shape)
    no_lv = np.empty((1, LV_COLS), np.int64)  # (no level lists in these shapes)
    info = np.empty((1024, n_cols), np.int64)
    n_ok = 0
    out = np.zeros(n_cols, np.int64)
    for i in range(len(fr)):
        k = i + AHEAD_LINES
        if k < len(fr) and todo[k]:
            prefetch_span(buf, fr[k, _F_D0], fr[k, _F_D1])
        if not todo[i] or fr[i, _F_D0] < 0:
            continue
        e = fr[i, _F_D1]
        p, is_array = _first_event(buf, fr[i, _F_D0], e)
        mark = n_ok
        while p >= 0:
            out[:] = -1
            out[c_ts] = fr[i, _F_TS]
            out[c_seq] = fr[i, _F_SEQ]
            out[c_stream], out[c_stream + 1] = fr[i, _F_S0], fr[i, _F_S1]
            q, seen, _lv, _n = flat_object(buf, p, e, shape, out, 0, no_lv, 0)
            if q < 0 or (c_kind >= 0 and not seen & id_bits[out[c_kind] - 1]):
                p = -1
                break
            info = grow(info, n_ok)
            info[n_ok] = out
            info[n_ok, c_line] = i
            if c_evt >= 0:
                info[n_ok, c_evt] = event_time(out[c_evt], fr[i, _F_TS])
            n_ok += 1
            p, done = _after_event(buf, q, e, is_array)
            if done:
                break
        if p < 0:
            n_ok = mark
    return info[:n_ok]


def _not_partial_depth(buf: np.ndarray, stream: np.ndarray) -> np.ndarray:
    """Rows whose stream (n x 2 spans; none for a bare frame) is not a partial-depth stream:
    that name makes a line a top-N book snapshot, for the depth path only."""
    codes, streams = distinct_spans(buf, stream[:, 0], stream[:, 1])
    stream_ok = np.array(
        [binance.PARTIAL_DEPTH_RE.fullmatch(x) is None for x in streams.to_pylist()], dtype=bool
    )
    return stream_ok[codes]


def _streams_symbols(
    buf: np.ndarray, stream: np.ndarray, raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str | None], pa.Array]:
    """Rows given by their stream and venue-symbol spans (n x 2: start, end) -> (rows the
    normalizer takes as this event: stream not a partial-depth one and a symbol it accepts,
    venue-symbol code of each row, symbol of each code or None, venue symbol of each code)."""
    keep = _not_partial_depth(buf, stream)
    codes, raws = distinct_spans(buf, raw[:, 0], raw[:, 1])
    symbols = checked_symbols(raws.to_pylist(), binance.symbol_of, (NormalizeError, TypeError))
    keep &= np.array([s is not None for s in symbols], dtype=bool)[codes]
    return keep, codes, symbols, raws


# info rows, venue-symbol code per row, symbols, venue symbol of each code, lines taken
_Taken = tuple[np.ndarray, np.ndarray, list[str | None], pa.Array, np.ndarray]


def _taken_events(
    exchange: str, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray,
    frames: np.ndarray | None, shape: tuple, id_bits: np.ndarray, layout: tuple, sym_col: int,
) -> _Taken | None:  # fmt: skip
    """The `todo` events of `exchange` read by one declaration (``_scan_events``) that the
    normalizer surely takes as that event -> (info rows, venue-symbol code per row, symbols,
    venue symbol of each code, mask of the lines taken), or None when there is none."""
    if len(starts) == 0 or not todo.any():
        return None
    if frames is None:
        frames = frames_of(exchange, buf, starts, ends, todo)
    info = _scan_events(frames, buf, todo, shape, id_bits, layout)
    if not len(info):
        return None
    c_line, c_stream = layout[1], layout[4]
    keep, codes, symbols, raws = _streams_symbols(
        buf, info[:, c_stream : c_stream + 2], info[:, sym_col : sym_col + 2]
    )
    if not keep.all():  # a line of several events: all of them, or the per-line path
        keep &= ~np.isin(info[:, c_line], info[~keep, c_line])
    if not keep.any():
        return None
    info, codes = info[keep], codes[keep]
    taken = np.zeros(len(starts), dtype=bool)
    taken[info[:, c_line]] = True
    return info, codes, symbols, raws, taken


@dataclass
class FastTickers:
    """bookTicker rows of one exchange from the columnar path, in line order: the quote rows
    and the TopOfBook reports the per-line path would append, as columns."""

    exchange: str
    line: np.ndarray  # int64[n] line index in the segment (0-based)
    symbol: pa.Array
    venue_symbol: pa.Array
    update_id: np.ndarray
    bid_px: pa.Array
    bid_sz: pa.Array
    ask_px: pa.Array
    ask_sz: pa.Array
    ts_event: np.ndarray
    ts_recv: np.ndarray
    seq: np.ndarray

    def __len__(self) -> int:
        return len(self.line)

    def quotes(self) -> pa.Table:
        """The rows in the layout of the per-line quotes (``pipeline`` columns of QUOTES)."""
        n = len(self.line)
        return pa.table(
            {
                "exchange": pa.array([self.exchange] * n, pa.string()),
                "symbol": self.symbol,
                "ts_event": pa.array(self.ts_event, pa.int64()),
                "ts_recv": pa.array(self.ts_recv, pa.int64()),
                "venue_symbol": self.venue_symbol,
                "bid_px": self.bid_px,
                "bid_sz": self.bid_sz,
                "ask_px": self.ask_px,
                "ask_sz": self.ask_sz,
                "last": pa.nulls(n, pa.string()),
                "seq": pa.array(self.seq, pa.int64()),
            }
        )

    def tops(self) -> list[TopOfBook]:
        ex = self.exchange
        return [
            TopOfBook(ex, sym, uid, bpx, bsz, apx, asz, ts)
            for sym, uid, bpx, bsz, apx, asz, ts in zip(
                self.symbol.to_pylist(),
                self.update_id.tolist(),
                self.bid_px.to_pylist(),
                self.bid_sz.to_pylist(),
                self.ask_px.to_pylist(),
                self.ask_sz.to_pylist(),
                self.ts_recv.tolist(),
                strict=True,
            )
        ]


def fast_book_tickers(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[FastTickers | None, np.ndarray]:
    """The bookTicker lines of `exchange` among the `todo` lines that the normalizer surely
    accepts -> their rows as columns (the very values it would produce) and the mask of the
    lines taken; every other line is left to the per-line path."""
    got = _taken_events(
        exchange, buf, starts, ends, todo, frames, _BOOK_TICKER, _NO_IDS, _TICKER_LAYOUT,
        _TICKER_COLUMNS["venue_symbol"],
    )  # fmt: skip
    if got is None:
        return None, np.zeros(len(starts), dtype=bool)
    info, codes, symbols, raws, taken = got
    rows = info[:, _TICKER_LAYOUT[1]].copy()
    take = pa.array(codes, pa.int64())
    return FastTickers(
        exchange=exchange,
        line=rows.astype(np.int64),
        symbol=pa.array(symbols, pa.string()).take(take),
        venue_symbol=raws.take(take),
        update_id=info[:, 0].copy(),
        bid_px=spans(buf, info[:, 4], info[:, 5]),
        bid_sz=spans(buf, info[:, 6], info[:, 7]),
        ask_px=spans(buf, info[:, 8], info[:, 9]),
        ask_sz=spans(buf, info[:, 10], info[:, 11]),
        ts_event=info[:, 1].copy(),
        ts_recv=info[:, 14].copy(),
        seq=info[:, 15].copy(),
    ), taken


def quick_book_tickers(
    exchange: str, data: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
    todo: np.ndarray,
) -> dict[int, tuple[str, str, int, str, str, str, str, int, int, int]]:  # fmt: skip
    """Line index -> (symbol, venue symbol, update id, bid px, bid sz, ask px, ask sz,
    ts_event, ts_recv, seq) for the lines ``fast_book_tickers`` takes (row view, for tests)."""
    t, _taken = fast_book_tickers(exchange, buf, starts, ends, todo)
    if t is None:
        return {}
    cols = zip(
        t.symbol.to_pylist(),
        t.venue_symbol.to_pylist(),
        t.update_id.tolist(),
        t.bid_px.to_pylist(),
        t.bid_sz.to_pylist(),
        t.ask_px.to_pylist(),
        t.ask_sz.to_pylist(),
        t.ts_event.tolist(),
        t.ts_recv.tolist(),
        t.seq.tolist(),
        strict=True,
    )
    return dict(zip(t.line.tolist(), cols, strict=True))


# ---------------------------------------------------------------- aggTrade / trade
# One trade row per line (``venues.binance._trade``); unlike bookTicker no other output, so the
# rows go straight into the trades table as columns, merged by line index.
# the venue's aggTrade / trade declaration (``binance.TRADE``) read into the info columns:
# aggTrade "a" s/e, trade "t" s/e, T ns, s s/e, p s/e, q s/e, m, line, stream s/e, ts, seq,
# e (1 + the index of its word)
_TRADE_COLUMNS = {
    "agg_id": 0, "trade_id": 2, "ts_event": 4, "venue_symbol": 5, "price": 7, "size": 9,
    "buyer_maker": 11, "type": 17,
}  # fmt: skip
_TRADE = binance.TRADE.args_for(_TRADE_COLUMNS)
_EVENTS = binance.TRADE.words[binance.TRADE.columns.index("type")]
# per event word: the keys its id needs, and the id's info column
_TRADE_ID = np.array([binance.TRADE.bits(binance.TRADE_ID_COLUMN[e]) for e in _EVENTS], np.int64)
_TRADE_ID_COL = np.array([_TRADE_COLUMNS[binance.TRADE_ID_COLUMN[e]] for e in _EVENTS], np.int64)
_TAKER_SIDES = pa.array([binance.TAKER_SIDE[False], binance.TAKER_SIDE[True]], pa.string())
_TRADE_LAYOUT = (18, 12, 15, 16, 13, -1, 17)


@dataclass
class FastTrades:
    """aggTrade/trade rows of one exchange from the columnar path, in line order."""

    line: np.ndarray  # int64[n] line index in the segment (0-based)
    table: pa.Table  # the layout of per-line trades (``pipeline`` columns of TRADES)

    def __len__(self) -> int:
        return len(self.line)


def fast_trades_of(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[FastTrades | None, np.ndarray]:
    """The aggTrade/trade lines of `exchange` among the `todo` lines that the normalizer
    surely accepts -> their trade rows as columns (the very values it would produce) and the
    mask of the lines taken; every other line is left to the per-line path."""
    got = _taken_events(
        exchange, buf, starts, ends, todo, frames, _TRADE, _TRADE_ID, _TRADE_LAYOUT,
        _TRADE_COLUMNS["venue_symbol"],
    )  # fmt: skip
    if got is None:
        return None, np.zeros(len(starts), dtype=bool)
    info, codes, symbols, raws, taken = got
    rows = info[:, _TRADE_LAYOUT[1]].copy()
    take = pa.array(codes, pa.int64())
    m = len(rows)
    id_col = _TRADE_ID_COL[info[:, 17] - 1]
    id_s = info[np.arange(m), id_col]
    id_e = info[np.arange(m), id_col + 1]
    table = pa.table(
        {
            "exchange": pa.array([exchange] * m, pa.string()),
            "symbol": pa.array(symbols, pa.string()).take(take),
            "ts_event": pa.array(info[:, 4], pa.int64()),
            "ts_recv": pa.array(info[:, 15], pa.int64()),
            "venue_symbol": raws.take(take),
            "trade_id": spans(buf, id_s, id_e),
            "price": spans(buf, info[:, 7], info[:, 8]),
            "size": spans(buf, info[:, 9], info[:, 10]),
            "side": _TAKER_SIDES.take(pa.array(info[:, 11])),
            "seq": pa.array(info[:, 16], pa.int64()),
        }
    )
    return FastTrades(line=rows, table=table), taken


# ---------------------------------------------------------------- 24hrTicker
# One quote row per line (``venues.binance._ticker_24h``): the last price and, when sent (spot),
# the best bid/ask. The venue's declaration ``binance.TICKER_24H`` read into the info columns:
# E ns, s s/e, c s/e, b s/e, B s/e, a s/e, A s/e, stream s/e, ts, seq, line
_T24_COLUMNS = {
    "ts_event": 0, "venue_symbol": 1, "last": 3, "bid_px": 5, "bid_sz": 7, "ask_px": 9,
    "ask_sz": 11,
}  # fmt: skip
_TICKER_24H = binance.TICKER_24H.args_for(_T24_COLUMNS)
_T24_LAYOUT = (18, 17, 15, 16, 13, 0, -1)


def fast_tickers_24h(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[tuple[np.ndarray, pa.Table] | None, np.ndarray]:
    """The 24hrTicker lines of `exchange` among the `todo` lines that the normalizer surely
    accepts -> (line of each row, their quote rows as a table in the per-line layout) and the
    mask of the lines taken; every other line is left to the per-line path."""
    got = _taken_events(
        exchange, buf, starts, ends, todo, frames, _TICKER_24H, _NO_IDS, _T24_LAYOUT,
        _T24_COLUMNS["venue_symbol"],
    )  # fmt: skip
    if got is None:
        return None, np.zeros(len(starts), dtype=bool)
    info, codes, symbols, raws, taken = got
    take = pa.array(codes, pa.int64())
    c = _T24_COLUMNS
    table = pa.table(
        {
            "exchange": pa.array([exchange] * len(info), pa.string()),
            "symbol": pa.array(symbols, pa.string()).take(take),
            "ts_event": pa.array(info[:, c["ts_event"]], pa.int64()),
            "ts_recv": pa.array(info[:, _T24_LAYOUT[2]], pa.int64()),
            "venue_symbol": raws.take(take),
            **{
                name: opt_spans(buf, info[:, c[name]], info[:, c[name] + 1])
                for name in ("bid_px", "bid_sz", "ask_px", "ask_sz", "last")
            },
            "seq": pa.array(info[:, _T24_LAYOUT[3]], pa.int64()),
        }
    )
    return (info[:, _T24_LAYOUT[1]].copy(), table), taken


# ---------------------------------------------------------------- control events
# kline, markPriceUpdate, ... (``venues.binance.CONTROL_EVENTS``): the normalizer only reads
# "e" and counts the line as control, but the per-line path still parses the whole line, so a
# line is taken here only when it is surely valid JSON: an object of scalars (ASCII strings
# without escapes, integers without fraction or exponent, true/false/null) and objects of
# scalars, "e" once. Arrays, floats, escapes, deeper nesting... go to the per-line path.
_CONTROL_KEY = as_bytes(b"e")
_CONTROL_EVENTS = pack_words(sorted(binance.CONTROL_EVENTS - binance.HANDLERS.keys()))
_NO_KEYS = pack_words(())


@njit(cache=True)
def _scan_control(fr, buf, todo, key, events, refused):
    """Lines of control events -> (line index, stream start, stream end) per line taken."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf = borrowed(buf)
    info = np.empty((1024, 3), np.int64)
    n_ok = 0
    for i in range(len(fr)):
        k = i + AHEAD_LINES
        if k < len(fr) and todo[k]:
            prefetch_span(buf, fr[k, _F_D0], fr[k, _F_D1])
        if not todo[i] or fr[i, _F_D0] < 0:
            continue
        e = fr[i, _F_D1]
        p, is_array = _first_event(buf, fr[i, _F_D0], e)
        while p >= 0:  # every event of the line a control event
            q = control_object_end(buf, p, e, key, *events, *refused)
            p, done = _after_event(buf, q, e, is_array)
            if done:
                break
        if p < 0:
            continue
        info = grow(info, n_ok)
        info[n_ok, 0] = i
        info[n_ok, 1] = fr[i, _F_S0]
        info[n_ok, 2] = fr[i, _F_S1]
        n_ok += 1
    return info[:n_ok]


def control_lines(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of the `todo` lines of `exchange` that the normalizer surely counts as control
    (kline, markPriceUpdate, ... in a combined-stream frame, valid JSON as checked above)."""
    taken = np.zeros(len(starts), dtype=bool)
    if not len(starts) or not todo.any():
        return taken
    if frames is None:
        frames = frames_of(exchange, buf, starts, ends, todo)
    info = _scan_control(frames, buf, todo, _CONTROL_KEY, _CONTROL_EVENTS, _NO_KEYS)
    if not len(info):
        return taken
    taken[info[_not_partial_depth(buf, info[:, 1:3]), 0]] = True
    return taken


def scan_binance(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    env: np.ndarray,
) -> ScanResult:
    """The `todo` lines of one Binance exchange: depth books (with REST snapshots),
    bookTicker, trade and 24hrTicker rows as columns, control lines counted. One pass finds
    each line's event span (``frames_of``); the event scanners reuse it."""
    sel = todo.copy()  # the lines still to do
    frames = frames_of(exchange, buf, starts, ends, sel, env)
    out = fast_binance_depth(exchange, buf, starts, ends, sel, frames, env)
    taken = out.taken
    sel &= ~taken
    tickers, ticker_taken = fast_book_tickers(exchange, buf, starts, ends, sel, frames)
    if tickers is not None:
        out.tickers.append(tickers)
        sel &= ~ticker_taken
        taken |= ticker_taken
    trades, trade_taken = fast_trades_of(exchange, buf, starts, ends, sel, frames)
    if trades is not None:
        out.trades.append((trades.line, trades.table))
        sel &= ~trade_taken
        taken |= trade_taken
    quotes, quote_taken = fast_tickers_24h(exchange, buf, starts, ends, sel, frames)
    if quotes is not None:
        out.quotes.append(quotes)
        sel &= ~quote_taken
        taken |= quote_taken
    out.control = control_lines(exchange, buf, starts, ends, sel, frames)
    return out


SCANNER = register(Scanner("binance", binance.EXCHANGES, scan_binance))
