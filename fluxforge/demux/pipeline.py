"""The demux of one segment: scanners first, the per-line path for the rest, then the tables.

Two paths, same result:

- one numba pass reads every line's envelope (``bytescan.envelopes``: exchange, ts, seq, kind,
  payload position); the registered venue scanners (``fluxforge.demux.registry``), called once
  per exchange present with that exchange's lines, start from those payloads and take the
  lines they fully understand: book lines become ``FastBook`` columns, Binance bookTicker and
  trade rows become table columns merged by line number, Binance kline/... lines are counted
  as control without parsing;
- the per-line path takes every other line: one ``orjson`` parse (``parse_envelope``) and one
  call into the venue's ``normalize``, which appends plain strings/ints to column lists
  (``EventSink``).

Everything after that is vectorized: Arrow arrays built from the lists in one go, prices and
sizes cast from the exact wire strings to the lake's decimal128(38, 12) by Arrow's cast kernel,
rows split by (exchange, symbol, UTC date of ts_recv) with one stable argsort. Book messages
of both paths are ordered by line number.

Every non-blank line lands in exactly one of three classes (``lines_in == data + quarantined +
control``, checked): data (the normalizer used it, possibly producing zero rows), control
(ctl records, heartbeats, acks, metadata) or quarantined (with a reason).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fluxforge import venues
from fluxforge.demux.bytescan import ENV_EX, line_bounds, read_envelopes
from fluxforge.demux.fastbook import FastBook, safe_symbol
from fluxforge.demux.registry import scanners
from fluxforge.events import BookMessage, EventSink, NormalizeError, TopOfBook
from fluxforge.segments import (
    EXCHANGE_RE,
    Envelope,
    EnvelopeError,
    parse_envelope,
    parse_segment_name,
)
from fluxforge.tables import DECIMAL, QUOTES, TRADES
from fluxforge.wire.decimal import to_decimal

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400_000_000_000
UNKNOWN_EXCHANGE = "_unknown"
ALL_SYMBOLS = "_all"
# ctl events after which a venue's books cannot be trusted to continue
RECONNECT_EVENTS = frozenset({"connect", "disconnect", "gap"})
_PRICE_COLUMNS = {
    "trades": ("price", "size"),
    "quotes": ("bid_px", "bid_sz", "ask_px", "ask_sz", "last"),
}
_RAW_KEEP = 1 << 20  # a quarantined line is kept whole up to 1 MiB, then cut (reason says so)


class LineAccountingError(AssertionError):
    """lines in != data + quarantined + control for a segment: a refinery bug, never skipped."""


@dataclass(slots=True)
class CtlEvent:
    exchange: str
    ts_recv: int
    event: str
    book_pos: int  # line number of the ctl record: book messages on earlier lines are older
    reason: str = ""  # the daemon's reason (disconnect / gap records), for the gap ledger


@dataclass
class DemuxResult:
    segment: str
    date: str  # UTC date of the segment (quarantine partition)
    bytes_in: int = 0
    lines_in: int = 0
    data: int = 0
    control: int = 0
    quarantined: int = 0
    trades: pa.Table | None = None  # TRADES + exchange, symbol columns, receive order
    quotes: pa.Table | None = None
    quarantine: pa.Table | None = None  # QUARANTINE + exchange column
    book_messages: list[BookMessage] = field(default_factory=list)
    book_lines: list[int] = field(default_factory=list)  # line number of each book message
    fast_books: dict[tuple[str, str], FastBook] = field(default_factory=dict)
    ctl: list[CtlEvent] = field(default_factory=list)
    normalizer_errors: int = 0  # unexpected exceptions in normalizers (quarantined too)
    per_line: int = 0  # lines no scanner took (parsed one by one: the slow path)
    # Venue top-of-book reports (``tops``): the per-line path's TopOfBook objects with their
    # line numbers, and the columnar bookTicker rows, merged in line order on first read of
    # ``tops`` (the refinery never reads them: no Python object per row there).
    _tops: list[TopOfBook] = field(default_factory=list)
    _top_lines: list[int] = field(default_factory=list)
    _fast_tops: list[Any] = field(default_factory=list)  # fluxforge.demux.binance.FastTickers

    @property
    def tops(self) -> list[TopOfBook]:
        """Every TopOfBook of the segment, in line order (both paths)."""
        if self._fast_tops:
            items = list(zip(self._top_lines, self._tops, strict=True))
            for fast in self._fast_tops:
                items.extend(zip(fast.line.tolist(), fast.tops(), strict=True))
            items.sort(key=lambda item: item[0])  # stable: a line's tops keep their order
            self._tops = [top for _line, top in items]
            self._top_lines = [line for line, _top in items]
            self._fast_tops = []
        return self._tops

    @tops.setter
    def tops(self, value: list[TopOfBook]) -> None:
        self._tops = value
        self._top_lines = []
        self._fast_tops = []

    def books_by_instrument(self) -> dict[tuple[str, str], list[tuple[int, BookMessage]]]:
        """(exchange, symbol) -> [(line number, message)] in receive order, for the messages
        of the per-line path (the columnar fast path's are in ``fast_books``)."""
        out: dict[tuple[str, str], list[tuple[int, BookMessage]]] = {}
        for line, msg in zip(self.book_lines, self.book_messages, strict=True):
            out.setdefault((msg.exchange, msg.symbol), []).append((line, msg))
        return out

    def books_by_instrument_all(self) -> list[tuple[int, BookMessage]]:
        """Every book message (both paths) as (line number, object), in line order."""
        items = [*zip(self.book_lines, self.book_messages, strict=True)]
        for fast in self.fast_books.values():
            items.extend(fast.to_messages())
        return sorted(items, key=lambda item: item[0])

    @property
    def book_count(self) -> int:
        return len(self.book_messages) + sum(len(f) for f in self.fast_books.values())

    def check_accounting(self) -> None:
        if self.lines_in != self.data + self.quarantined + self.control:
            raise LineAccountingError(
                f"segment {self.segment}: lines_in={self.lines_in} != data={self.data} + "
                f"quarantined={self.quarantined} + control={self.control}"
            )


class _Quarantine:
    __slots__ = ("exchange", "line_no", "raw", "reason", "seq", "ts_recv")

    def __init__(self) -> None:
        self.exchange: list[str] = []
        self.line_no: list[int] = []
        self.seq: list[int] = []
        self.ts_recv: list[int] = []
        self.reason: list[str] = []
        self.raw: list[bytes] = []

    def add(self, exchange: str, line_no: int, seq: int, ts: int, reason: str, raw: bytes) -> None:
        if len(raw) > _RAW_KEEP:
            reason = f"{reason} (raw line of {len(raw)} bytes cut to {_RAW_KEEP})"
            raw = raw[:_RAW_KEEP]
        self.exchange.append(exchange)
        self.line_no.append(line_no)
        self.seq.append(seq)
        self.ts_recv.append(ts)
        self.reason.append(reason)
        self.raw.append(raw)

    def table(self, segment: str) -> pa.Table:
        n = len(self.line_no)
        cols = {
            "exchange": pa.array(self.exchange, pa.string()),
            "segment": pa.array([segment] * n, pa.string()),
            "line_no": pa.array(self.line_no, pa.int64()),
            "seq": pa.array(self.seq, pa.int64()),
            "ts_recv": pa.array(self.ts_recv, pa.int64()),
            "reason": pa.array(self.reason, pa.string()),
            "raw": pa.array(self.raw, pa.binary()),
        }
        return pa.table(cols)


def _safe_exchange(ex: Any) -> str:
    return ex if isinstance(ex, str) and EXCHANGE_RE.match(ex) else UNKNOWN_EXCHANGE


def segment_date(segment: str) -> str:
    return parse_segment_name(segment).date


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC. A segment allocates millions of small, long-lived objects (parsed
    payloads, wire strings, book messages) and no reference cycles; the collector would rescan
    the growing heap again and again (measured: ~30% of demux time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def demux(
    data: bytes,
    segment: str,
    poison: dict[int, str] | None,
    normalize: Callable[[Envelope, EventSink], str] | None,
    fast: bool,
) -> DemuxResult:
    """``fluxforge.demux.demux_segment`` with every choice made (see there)."""
    if normalize is None:
        normalize = venues.normalize
    with gc_paused():
        return _demux(data, segment, poison, normalize, fast and normalize is venues.normalize)


def _demux(
    data: bytes,
    segment: str,
    poison: dict[int, str] | None,
    normalize: Callable[[Envelope, EventSink], str],
    fast: bool,
) -> DemuxResult:
    result = _demux_pass(data, segment, poison or {}, normalize, fast)
    bad = _find_poison(result)
    if bad:
        log.warning("segment %s: %d line(s) quarantined after normalization", segment, len(bad))
        result = _demux_pass(data, segment, {**(poison or {}), **bad}, normalize)
        again = _find_poison(result)
        if again:  # cannot happen: the poisoned seqs are quarantined before normalization
            raise LineAccountingError(f"segment {segment}: unusable rows remain: {again}")
    result.check_accounting()
    return result


def _demux_pass(
    data: bytes,
    segment: str,
    poison: dict[int, str],
    normalize: Callable[[Envelope, EventSink], str],
    fast: bool = True,
) -> DemuxResult:
    res = DemuxResult(segment=segment, date=segment_date(segment), bytes_in=len(data))
    sink = EventSink()
    quarantine = _Quarantine()
    tseq = sink.trades["seq"]
    qseq = sink.quotes["seq"]
    books = sink.books
    book_lines = res.book_lines
    tops = sink.tops
    lines_in = n_data = n_control = 0
    parse = parse_envelope
    buf = np.frombuffer(data, np.uint8)
    starts, ends = line_bounds(buf)
    todo = ends > starts  # empty lines are not messages
    # columnar Binance bookTicker and trade rows, merged by line index with the per-line
    # path's quotes/tops/trades
    fast_tickers: list[Any] = []
    fast_trades: list[tuple[np.ndarray, pa.Table]] = []
    fast_quotes: list[tuple[np.ndarray, pa.Table]] = []
    q_lines: list[int] = []  # line index of each per-line quote row
    t_lines: list[int] = []  # line index of each per-line trade row
    top_lines: list[int] = []  # line index of each per-line TopOfBook
    if fast and not poison:
        # (scanner, exchange id) by exchange code
        owners = [(scanner, ex) for scanner in scanners() for ex in scanner.exchanges]
        # one envelope pass; then each scanner is called once per exchange of its own that
        # the segment holds, with the rows of that exchange's lines only (fluxforge.demux.registry)
        env = read_envelopes(buf, starts, ends, todo, [ex for _scanner, ex in owners])
        # every exchange's lines together (code -1, no envelope: first), each in segment order
        by_ex = np.argsort(env[:, ENV_EX], kind="stable")
        at = np.searchsorted(env[by_ex, ENV_EX], np.arange(len(owners) + 1))
        starts_by, ends_by, env_by = starts[by_ex], ends[by_ex], env[by_ex]
        for code, (scanner, exchange) in enumerate(owners):
            a, b = int(at[code]), int(at[code + 1])
            if a == b:
                continue
            mine = np.ones(b - a, dtype=bool)
            got = scanner.scan(exchange, buf, starts_by[a:b], ends_by[a:b], mine, env_by[a:b])
            got = got.in_segment(by_ex[a:b], len(starts))
            n_taken = int(got.taken.sum())
            n_ctl = 0 if got.control is None else int(got.control.sum())
            todo &= ~got.taken
            if got.control is not None:
                todo &= ~got.control
            res.fast_books.update(got.books)
            fast_tickers.extend(got.tickers)
            fast_trades.extend(got.trades)
            fast_quotes.extend(got.quotes)
            n_data += n_taken
            n_control += n_ctl
            lines_in += n_taken + n_ctl
    n_scanned = lines_in

    rest = np.flatnonzero(todo)  # the lines no scanner took
    for idx, start, end in zip(
        rest.tolist(), starts[rest].tolist(), ends[rest].tolist(), strict=True
    ):
        line = data[start:end]
        if line.isspace():
            continue
        line_no = idx + 1
        lines_in += 1
        try:
            env = parse(line)
        except EnvelopeError as exc:
            quarantine.add(UNKNOWN_EXCHANGE, line_no, -1, -1, f"envelope: {exc}", line)
            continue
        ex = env.ex
        if env.kind == "ctl":
            n_control += 1
            event = env.data.get("event") if isinstance(env.data, dict) else None
            if event in RECONNECT_EVENTS:
                reason = env.data.get("reason")
                why = reason[:200] if isinstance(reason, str) else ""
                res.ctl.append(CtlEvent(ex, env.ts, event, line_no, why))
            continue
        if poison and env.seq in poison:
            quarantine.add(_safe_exchange(ex), line_no, env.seq, env.ts, poison[env.seq], line)
            continue
        nb = len(books)
        marks = (len(tseq), len(qseq), nb, len(tops))
        try:
            cls = normalize(env, sink)
        except NormalizeError as exc:
            _rollback(sink, marks)
            quarantine.add(_safe_exchange(ex), line_no, env.seq, env.ts, str(exc) or "?", line)
            continue
        except Exception as exc:  # a normalizer bug must not kill the run or lose the line
            _rollback(sink, marks)
            res.normalizer_errors += 1
            reason = f"normalizer {ex} failed: {type(exc).__name__}: {exc}"
            quarantine.add(_safe_exchange(ex), line_no, env.seq, env.ts, reason, line)
            continue
        if cls == "data" or cls == "control":
            if cls == "data":
                n_data += 1
            else:
                n_control += 1
            if len(books) != nb:
                book_lines.extend([line_no] * (len(books) - nb))
            if len(tseq) != marks[0]:
                t_lines.extend([idx] * (len(tseq) - marks[0]))
            if len(qseq) != marks[1]:
                q_lines.extend([idx] * (len(qseq) - marks[1]))
            if len(tops) != marks[3]:
                top_lines.extend([idx] * (len(tops) - marks[3]))
        else:
            _rollback(sink, marks)
            reason = f"normalizer {ex} returned {cls!r} (expected 'data' or 'control')"
            quarantine.add(_safe_exchange(ex), line_no, env.seq, env.ts, reason, line)

    res.lines_in = lines_in
    res.per_line = lines_in - n_scanned
    res.data = n_data
    res.control = n_control
    res.quarantined = len(quarantine.line_no)
    res.trades = _merge_rows(_columns(sink.trades, TRADES), t_lines, fast_trades)
    res.quotes = _merge_rows(
        _columns(sink.quotes, QUOTES),
        q_lines,
        [(t.line, t.quotes()) for t in fast_tickers] + fast_quotes,
    )
    res.quarantine = quarantine.table(segment)
    res.book_messages = books
    res.tops = tops
    res._top_lines = top_lines
    res._fast_tops = fast_tickers
    return res


def _rollback(sink: EventSink, marks: tuple[int, int, int, int]) -> None:
    nt, nq, nb, ntop = marks
    for col in sink.trades.values():
        del col[nt:]
    for col in sink.quotes.values():
        del col[nq:]
    del sink.books[nb:]
    del sink.tops[ntop:]


def _merge_rows(
    table: pa.Table, lines: list[int], fast: list[tuple[np.ndarray, pa.Table]]
) -> pa.Table:
    """The per-line path's rows (`lines`: line index of each) and the columnar rows of
    `fast` ((line index of each row, rows)) as one table in line order, as if every row had
    been appended at its line's turn."""
    if not fast:
        return table
    keys = np.concatenate([np.asarray(lines, np.int64)] + [line for line, _rows in fast])
    merged = pa.concat_tables([table, *(rows for _line, rows in fast)])
    if len(keys) > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
        merged = merged.take(pa.array(np.argsort(keys, kind="stable")))
    return merged.combine_chunks()


def _columns(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    """Column lists -> Arrow table (exchange, symbol + schema); decimals left as strings."""
    arrays: dict[str, pa.Array] = {
        "exchange": pa.array(cols["exchange"], pa.string()),
        "symbol": pa.array(cols["symbol"], pa.string()),
    }
    for fld in schema:
        values = cols[fld.name]
        if fld.type == DECIMAL:
            arrays[fld.name] = pa.array(values, pa.string())
        else:
            arrays[fld.name] = pa.array(values, fld.type)
    return pa.table(arrays)


def _find_poison(res: DemuxResult) -> dict[int, str]:
    """Rows that cannot go to the lake: prices Arrow cannot cast, unsafe symbols."""
    bad: dict[int, str] = {}
    for name in ("trades", "quotes"):
        table = getattr(res, name)
        seqs = table.column("seq")
        cast = table
        for col in _PRICE_COLUMNS[name]:
            arr = table.column(col)
            try:
                if cast is not None:
                    idx = cast.schema.get_field_index(col)
                    cast = cast.set_column(idx, col, to_decimal(arr))
                else:
                    to_decimal(arr)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                cast = None
                for i, value in enumerate(arr.to_pylist()):
                    if value is None:
                        continue
                    try:
                        to_decimal(pa.array([value]))
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        bad.setdefault(
                            seqs[i].as_py(),
                            f"{name}.{col}={value[:64]!r}: does not fit the lake's "
                            f"decimal({DECIMAL.precision},{DECIMAL.scale}): {exc}",
                        )
        # the casts just made are what ``cast_prices`` gives for this table: kept for it
        _LAST_CAST[name] = (table, cast) if cast is not None else (None, None)
        symbols = table.column("symbol")
        # one check per distinct symbol (the columnar rows share a few), then its rows
        for sym in pc.unique(symbols).to_pylist():
            if safe_symbol(sym):
                continue
            rows = np.flatnonzero(pc.equal(symbols, sym).to_numpy(zero_copy_only=False))
            for i in rows.tolist():
                bad.setdefault(seqs[i].as_py(), f"{name}: unsafe symbol {sym[:64]!r}")
    for msg in res.book_messages:
        if not safe_symbol(msg.symbol):
            bad.setdefault(msg.seq, f"book: unsafe symbol {msg.symbol[:64]!r}")
    return bad


# name -> (table, its cast): the last demux's trades/quotes, cast while looking for poison
_LAST_CAST: dict[str, tuple[pa.Table | None, pa.Table | None]] = {}


def cast_prices(table: pa.Table, name: str) -> pa.Table:
    """Cast the wire-string price/size columns of trades/quotes to the lake's ``DECIMAL``."""
    source, cast = _LAST_CAST.get(name, (None, None))
    if source is table and cast is not None:
        return cast  # the demux cast this very table already
    for col in _PRICE_COLUMNS[name]:
        idx = table.schema.get_field_index(col)
        table = table.set_column(idx, col, to_decimal(table.column(col)))
    return table


def day_of(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS_PER_DAY * 86400, UTC).strftime("%Y-%m-%d")


def split_by_partition(
    table: pa.Table,
    ts_column: str = "ts_recv",
    exchange: str | None = None,
    symbol: str | None = None,
) -> dict[tuple[str, str, str], pa.Table]:
    """Split rows by (exchange, symbol, UTC date of `ts_column`), keeping row order inside each.

    The exchange/symbol columns are dropped from the parts (the hive directories carry them);
    pass `exchange`/`symbol` for tables that have no such columns (book engine output)."""
    if table.num_rows == 0:
        return {}
    ts = np.asarray(table.column(ts_column).to_numpy(zero_copy_only=False))
    if exchange is not None:
        first, last = int(ts.min()) // NS_PER_DAY, int(ts.max()) // NS_PER_DAY
        if first == last:  # one instrument's rows of one day (the usual case): no per-row work
            return {(exchange, symbol or ALL_SYMBOLS, day_of(first * NS_PER_DAY)): table}
    days = ts // NS_PER_DAY
    if exchange is not None:
        key = days - days.min()
        labels = [(exchange, symbol or ALL_SYMBOLS)]
        inst = np.zeros(len(days), dtype=np.int64)
    else:
        pair = (
            pc.binary_join_element_wise(table.column("exchange"), table.column("symbol"), "\x00")
            .combine_chunks()
            .dictionary_encode()
        )
        labels = [tuple(s.split("\x00", 1)) for s in pair.dictionary.to_pylist()]
        inst = pair.indices.to_numpy().astype(np.int64)
        key = inst * (days.max() - days.min() + 1) + (days - days.min())
        table = table.drop_columns(["exchange", "symbol"])
    order = np.argsort(key, kind="stable")
    skey = key[order]
    bounds = np.flatnonzero(np.diff(skey)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(skey)]))
    out: dict[tuple[str, str, str], pa.Table] = {}
    contiguous = bool(np.all(np.diff(order) == 1)) if len(order) > 1 else True
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        first = int(order[s])
        ex, sym = labels[int(inst[first])]
        date = day_of(int(days[first]) * NS_PER_DAY)
        part = table.slice(s, e - s) if contiguous else table.take(pa.array(order[s:e]))
        out[(ex, sym, date)] = part
    return out
