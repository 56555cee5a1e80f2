"""Demultiplex one raw segment: envelope -> venue normalizer -> columns per (table, exchange,
symbol, date).

Two paths, same result:

- Columnar fast paths for the high-volume book lines: Coinbase (Exchange ``l2update``/
  ``snapshot``, Advanced Trade ``l2_data``, below), Kraken ``book-N`` (``demux_kraken``), OKX
  and Bitget book pushes (``demux_okx``) and Binance ``depthUpdate`` and REST depth snapshots
  (``demux_binance``) are checked and cut into byte spans by numba passes over the segment and
  reach the book kernel as columns (``FastBook``, see the section "columnar fast path" below);
  Binance bookTicker and trade rows become table columns merged by line number, and Binance
  kline/... lines are counted as control without parsing. A line a scanner does not fully
  understand is left to:
- the per-line path: one ``orjson`` parse per line (``parse_envelope``) and one call into the
  venue's ``normalize``, which appends plain strings/ints to column lists (``EventSink``).

Everything after that is vectorized: Arrow arrays built from the lists in one go, prices and
sizes cast from the exact wire strings to decimal128(38, 18) by Arrow's cast kernel, rows split
by (exchange, symbol, UTC date of ts_recv) with one stable argsort. Book messages of both paths
are ordered by line number.

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
from numba import njit

from fluxforge.events import BookMessage, EventSink, NormalizeError, TopOfBook
from fluxforge.segments import EXCHANGE_RE, Envelope, EnvelopeError, parse_envelope
from fluxforge.storage.paths import sanitize_part
from fluxforge.tables import DECIMAL, QUOTES, TRADES

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
FAST_PATH = True  # columnar paths for book lines (tests switch them off to compare)
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
    # Venue top-of-book reports (``tops``): the per-line path's TopOfBook objects with their
    # line numbers, and the columnar bookTicker rows, merged in line order on first read of
    # ``tops`` (the refinery never reads them: no Python object per row there).
    _tops: list[TopOfBook] = field(default_factory=list)
    _top_lines: list[int] = field(default_factory=list)
    _fast_tops: list[Any] = field(default_factory=list)  # demux_binance.FastTickers

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
    from fluxforge.segments import parse_segment_name

    return parse_segment_name(segment).date


def _default_normalize() -> Callable[[Envelope, EventSink], str]:
    from fluxforge import venues

    return venues.normalize


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


def demux_segment(
    data: bytes,
    segment: str,
    *,
    poison: dict[int, str] | None = None,
    normalize: Callable[[Envelope, EventSink], str] | None = None,
    fast: bool | None = None,
) -> DemuxResult:
    """Parse and normalize every line of one raw segment.

    `poison` maps daemon seq numbers to a quarantine reason: lines found unusable only after
    normalization (a price Arrow cannot cast, an unsafe symbol) are quarantined on a second
    pass, so a line is either wholly in the tables or wholly in quarantine.
    `normalize` defaults to ``fluxforge.venues.normalize`` (dispatch on exchange and shape);
    `fast` enables the columnar path for Coinbase book lines (same output, see below)."""
    if normalize is None:
        from fluxforge import venues

        normalize = venues.normalize
    with gc_paused():
        use_fast = (FAST_PATH if fast is None else fast) and normalize is _default_normalize()
        return _demux(data, segment, poison, normalize, use_fast)


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
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(buf)])).astype(np.int64)
    todo = ends > starts
    starts_py, ends_py = starts.tolist(), ends.tolist()  # empty lines are not messages
    # columnar Binance bookTicker and trade rows, merged by line index with the per-line
    # path's quotes/tops/trades
    fast_tickers: list[Any] = []
    fast_trades: list[tuple[np.ndarray, pa.Table]] = []
    q_lines: list[int] = []  # line index of each per-line quote row
    t_lines: list[int] = []  # line index of each per-line trade row
    top_lines: list[int] = []  # line index of each per-line TopOfBook
    if fast and not poison:
        res.fast_books, taken = fast_coinbase_books(buf, starts, ends)
        todo &= ~taken
        from fluxforge.demux_kraken import fast_kraken_books

        kraken_books, kraken_taken = fast_kraken_books(buf, starts, ends, todo)
        res.fast_books.update(kraken_books)
        todo &= ~kraken_taken
        n_data = lines_in = int(taken.sum()) + int(kraken_taken.sum())
        from fluxforge.demux_okx import fast_okx_bitget_books

        for venue in ("okx", "bitget"):
            venue_books, venue_taken = fast_okx_bitget_books(venue, buf, starts, ends, todo)
            res.fast_books.update(venue_books)
            todo &= ~venue_taken
            n_data += int(venue_taken.sum())
            lines_in += int(venue_taken.sum())
        from fluxforge.demux_binance import (
            control_lines,
            fast_binance_depth,
            fast_book_tickers,
            fast_trades_of,
            venue_lines,
        )

        # Binance: one envelope pass finds each exchange's lines; its scanners see only those
        for venue, sel in venue_lines(buf, starts, ends, todo).items():
            venue_books, venue_taken = fast_binance_depth(venue, buf, starts, ends, sel)
            res.fast_books.update(venue_books)
            sel &= ~venue_taken
            n_taken = int(venue_taken.sum())
            tickers, ticker_taken = fast_book_tickers(venue, buf, starts, ends, sel)
            if tickers is not None:
                fast_tickers.append(tickers)
                sel &= ~ticker_taken
                n_taken += len(tickers)
            trades, trade_taken = fast_trades_of(venue, buf, starts, ends, sel)
            if trades is not None:
                fast_trades.append((trades.line, trades.table))
                sel &= ~trade_taken
                n_taken += len(trades)
            ctl_taken = control_lines(venue, buf, starts, ends, sel)
            n_ctl = int(ctl_taken.sum())
            todo &= ~(venue_taken | ticker_taken | trade_taken | ctl_taken)
            n_data += n_taken
            n_control += n_ctl
            lines_in += n_taken + n_ctl

    for idx in np.flatnonzero(todo).tolist():
        line = data[starts_py[idx] : ends_py[idx]]
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
    res.data = n_data
    res.control = n_control
    res.quarantined = len(quarantine.line_no)
    res.trades = _merge_rows(_columns(sink.trades, TRADES), t_lines, fast_trades)
    res.quotes = _merge_rows(
        _columns(sink.quotes, QUOTES), q_lines, [(t.line, t.quotes()) for t in fast_tickers]
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
        for col in _PRICE_COLUMNS[name]:
            arr = table.column(col)
            try:
                arr.cast(DECIMAL)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                for i, value in enumerate(arr.to_pylist()):
                    if value is None:
                        continue
                    try:
                        pa.array([value]).cast(DECIMAL)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        bad.setdefault(
                            seqs[i].as_py(),
                            f"{name}.{col}={value[:64]!r}: not a decimal(38,18): {exc}",
                        )
        for i, sym in enumerate(table.column("symbol").to_pylist()):
            if not _safe_symbol(sym):
                bad.setdefault(seqs[i].as_py(), f"{name}: unsafe symbol {sym[:64]!r}")
    for msg in res.book_messages:
        if not _safe_symbol(msg.symbol):
            bad.setdefault(msg.seq, f"book: unsafe symbol {msg.symbol[:64]!r}")
    return bad


_SAFE_CACHE: dict[str, bool] = {}


def _safe_symbol(sym: str) -> bool:
    """A symbol must be its own path part (no '/', '..', NUL, ...): BASE-QUOTE[-...]."""
    ok = _SAFE_CACHE.get(sym)
    if ok is None:
        ok = isinstance(sym, str) and sanitize_part(sym) == sym
        if len(_SAFE_CACHE) < 100_000:
            _SAFE_CACHE[sym] = ok
    return ok


def cast_prices(table: pa.Table, name: str) -> pa.Table:
    """Cast the wire-string price/size columns of trades/quotes to decimal128(38, 18)."""
    for col in _PRICE_COLUMNS[name]:
        idx = table.schema.get_field_index(col)
        table = table.set_column(idx, col, table.column(col).cast(DECIMAL))
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
    days = np.asarray(table.column(ts_column).to_numpy(zero_copy_only=False)) // NS_PER_DAY
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


# ---------------------------------------------------------------- columnar fast path
#
# The bulk of a Coinbase feed is `l2update` lines (plus a few large `snapshot`s). Going through
# orjson + the per-line normalizer costs ~10 us a line; here those lines are picked with byte
# tests, scanned by one numba pass over the segment bytes that checks them against exactly the
# rules of fluxforge.venues.coinbase (plain decimals, price > 0, side words, RFC 3339 time,
# plausible ns) and records byte spans; the spans become Arrow string columns that go to the
# book kernel as columns (BookBatch.from_columns), never as Python objects. The scanner only
# accepts the compact shape it knows (no escapes, no unknown keys, no duplicates); anything
# else goes through the per-line path, which gives it the normalizer's own treatment and
# quarantine reason. So both paths produce the same tables (tested byte for byte).

FAST_CHANNEL = "level2"


@dataclass
class FastBook:
    """Book messages of one instrument from the columnar path, in line order."""

    exchange: str
    symbol: str
    venue_symbol: str
    channel: str
    line: np.ndarray  # int64[n] line numbers (receive order)
    ts_event: np.ndarray
    ts_recv: np.ndarray
    seq: np.ndarray
    is_snapshot: np.ndarray  # bool[n]
    level_offsets: np.ndarray  # int64[n+1]
    side: np.ndarray  # uint8[L] 0 bid 1 ask; per message bids first, then asks
    price: pa.Array  # large_string[L] exact wire text
    size: pa.Array
    final_id: np.ndarray  # int64[n] venue update id (Advanced Trade sequence_num), -1 = none
    # integrity fields of the other venues' shapes (None: the default of every message)
    first_id: np.ndarray | None = None  # int64[n], -1 = none
    prev_id: np.ndarray | None = None  # int64[n], -1 = none
    from_rest: np.ndarray | None = None  # bool[n]: an exchange REST snapshot
    checksum: np.ndarray | None = None  # int64[n] venue checksum, 0 where has_checksum is False
    has_checksum: np.ndarray | None = None  # bool[n]
    checksum_kind: str | None = None  # of every message with a checksum
    chain: str | None = None
    depth: int = 0  # venue depth (BookMessage.depth) of every message

    def __len__(self) -> int:
        return len(self.line)

    def batch(self, start: int, end: int) -> Any:
        """Messages [start, end) as the book kernel's columnar batch."""
        from fluxforge.book import BookBatch

        lo, hi = int(self.level_offsets[start]), int(self.level_offsets[end])
        has_ck = None
        if self.has_checksum is not None and self.has_checksum[start:end].any():
            has_ck = self.has_checksum[start:end]
        batch = BookBatch.from_columns(
            ts_event=self.ts_event[start:end],
            ts_recv=self.ts_recv[start:end],
            level_offsets=self.level_offsets[start : end + 1] - lo,
            side=self.side[lo:hi],
            price_strings=self.price.slice(lo, hi - lo),
            size_strings=self.size.slice(lo, hi - lo),
            venue_symbol=self.venue_symbol,
            channel=self.channel,
            seq=self.seq[start:end],
            is_snapshot=self.is_snapshot[start:end],
            final_id=self.final_id[start:end],
            first_id=_part(self.first_id, start, end),
            prev_id=_part(self.prev_id, start, end),
            from_rest=_part(self.from_rest, start, end),
            checksum=None if has_ck is None else _part(self.checksum, start, end),
            checksum_kind=None if has_ck is None else self.checksum_kind,
            chain=self.chain,
            venue_depth=self.depth,
        )
        if has_ck is not None and not has_ck.all():
            batch.checksum_kind[~has_ck] = 0  # as from_messages: no checksum, no kind
        return batch

    def to_messages(self) -> list[tuple[int, BookMessage]]:
        """The same messages as objects (for mixing with per-line messages of other shapes)."""
        px, sz = self.price.to_pylist(), self.size.to_pylist()
        out = []
        for i in range(len(self)):
            lo, hi = int(self.level_offsets[i]), int(self.level_offsets[i + 1])
            bids = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 0]
            asks = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 1]
            has_ck = self.has_checksum is not None and bool(self.has_checksum[i])
            msg = BookMessage(
                self.exchange, self.symbol, self.venue_symbol, self.channel,
                int(self.ts_event[i]), int(self.ts_recv[i]), int(self.seq[i]),
                bool(self.is_snapshot[i]), bids, asks, final_id=int(self.final_id[i]),
                first_id=-1 if self.first_id is None else int(self.first_id[i]),
                prev_id=-1 if self.prev_id is None else int(self.prev_id[i]),
                checksum=int(self.checksum[i]) if has_ck else None,  # type: ignore[index]
                checksum_kind=self.checksum_kind if has_ck else None,
                chain=self.chain, depth=self.depth,
                from_rest=self.from_rest is not None and bool(self.from_rest[i]),
            )  # fmt: skip
            out.append((int(self.line[i]), msg))
        return out


def merge_columns(fast: FastBook, msgs: list[tuple[int, BookMessage]]) -> FastBook | None:
    """`fast` plus per-line messages of the same instrument, in line order, as columns; None
    when a per-line message carries what the columns cannot (other channel/product, chain or
    venue depth, a checksum of another kind or where the columns carry none)."""
    if not msgs:
        return fast
    for _, m in msgs:
        if (
            m.channel != fast.channel
            or m.venue_symbol != fast.venue_symbol
            or m.chain != fast.chain
            or m.depth != fast.depth
            or (m.checksum is not None and (fast.has_checksum is None or m.checksum_kind is None))
            or (m.checksum is not None and m.checksum_kind != fast.checksum_kind)
        ):
            return None
    lines = np.concatenate([fast.line, [ln for ln, _ in msgs]]).astype(np.int64)
    order = np.argsort(lines, kind="stable")
    n_fast = len(fast)
    side: list[int] = []
    price: list[str] = []
    size: list[str] = []
    lens = []
    for _, m in msgs:
        for px, sz in m.bids:
            price.append(px)
            size.append(sz)
        for px, sz in m.asks:
            price.append(px)
            size.append(sz)
        side.extend([0] * len(m.bids) + [1] * len(m.asks))
        lens.append(len(m.bids) + len(m.asks))
    all_lens = np.concatenate([np.diff(fast.level_offsets), lens]).astype(np.int64)
    all_starts = np.concatenate(
        [fast.level_offsets[:-1], fast.level_offsets[-1] + np.cumsum([0, *lens[:-1]])]
    ).astype(np.int64)
    o_lens = all_lens[order]
    offsets = np.concatenate(([0], np.cumsum(o_lens))).astype(np.int64)
    lvl_idx = np.repeat(all_starts[order] - offsets[:-1], o_lens) + np.arange(offsets[-1])
    take = pa.array(lvl_idx, pa.int64())
    all_side = np.concatenate([fast.side, np.asarray(side, np.uint8)])
    all_px = pa.concat_arrays([fast.price, pa.array(price, pa.large_string())])
    all_sz = pa.concat_arrays([fast.size, pa.array(size, pa.large_string())])

    def cat(a: np.ndarray, attr: str) -> np.ndarray:
        return np.concatenate([a, [getattr(m, attr) for _, m in msgs]]).astype(a.dtype)[order]

    def opt(
        a: np.ndarray | None, values: list[Any], fill: int | bool = -1, dtype: Any = np.int64
    ) -> np.ndarray | None:
        if a is None:
            if all(v == fill for v in values):
                return None
            a = np.full(n_fast, fill, dtype)  # the default of every fast message
        return np.concatenate([a, values]).astype(a.dtype)[order]

    return FastBook(
        exchange=fast.exchange,
        symbol=fast.symbol,
        venue_symbol=fast.venue_symbol,
        channel=fast.channel,
        line=lines[order],
        ts_event=cat(fast.ts_event, "ts_event"),
        ts_recv=cat(fast.ts_recv, "ts_recv"),
        seq=cat(fast.seq, "seq"),
        is_snapshot=cat(fast.is_snapshot, "is_snapshot"),
        final_id=cat(fast.final_id, "final_id"),
        level_offsets=offsets,
        side=all_side[lvl_idx],
        price=all_px.take(take),
        size=all_sz.take(take),
        first_id=opt(fast.first_id, [m.first_id for _, m in msgs]),
        prev_id=opt(fast.prev_id, [m.prev_id for _, m in msgs]),
        from_rest=opt(fast.from_rest, [m.from_rest for _, m in msgs], False, bool),
        checksum=opt(fast.checksum, [m.checksum or 0 for _, m in msgs], 0),
        has_checksum=opt(fast.has_checksum, [m.checksum is not None for _, m in msgs], False, bool),
        checksum_kind=fast.checksum_kind,
        chain=fast.chain,
        depth=fast.depth,
    )


def _part(a: np.ndarray | None, start: int, end: int) -> np.ndarray | None:
    return None if a is None else a[start:end]


# ---------------------------------------------------------------- numba line scanner
# The primitives below are also compiled into the scanners of demux_kraken/_okx/_binance.
# numba's on-disk cache (cache=True) is keyed on each function's own file only: after changing
# a primitive here, delete fluxforge/__pycache__/demux_*.nbi/.nbc so those recompile.
_Q = 34  # "
_BS = 92  # backslash
_LB = 91  # [
_RB = 93  # ]
_LC = 123  # {
_RC = 125  # }
_COMMA = 44
_COLON = 58
_DOT = 46
_ENV_HEAD = np.frombuffer(b'{"ts":', np.uint8).copy()
_ENV_SRC = np.frombuffer(b',"src":"', np.uint8).copy()
_ENV_EX = np.frombuffer(b',"ex":"coinbase","seq":', np.uint8).copy()
_ENV_KIND = np.frombuffer(b',"kind":"msg","data":', np.uint8).copy()
# data keys
_K_TYPE = np.frombuffer(b"type", np.uint8).copy()
_K_PRODUCT = np.frombuffer(b"product_id", np.uint8).copy()
_K_TIME = np.frombuffer(b"time", np.uint8).copy()
_K_CHANGES = np.frombuffer(b"changes", np.uint8).copy()
_K_BIDS = np.frombuffer(b"bids", np.uint8).copy()
_K_ASKS = np.frombuffer(b"asks", np.uint8).copy()
_V_L2 = np.frombuffer(b"l2update", np.uint8).copy()
_V_SNAP = np.frombuffer(b"snapshot", np.uint8).copy()
_SIDE_WORDS = tuple(
    np.frombuffer(w, np.uint8).copy() for w in (b"buy", b"bid", b"sell", b"offer", b"ask")
)


@njit(cache=True)
def _eq(buf, s, e, word):
    if e - s != len(word):
        return False
    for k in range(len(word)):  # noqa: SIM110 (numba: no generators)
        if buf[s + k] != word[k]:
            return False
    return True


@njit(cache=True)
def _lit(buf, p, end, word):
    """position after `word` at p, or -1."""
    if p + len(word) > end:
        return -1
    for k in range(len(word)):
        if buf[p + k] != word[k]:
            return -1
    return p + len(word)


@njit(cache=True)
def _ws(buf, p, end):
    while p < end and (buf[p] == 32 or buf[p] == 9):
        p += 1
    return p


@njit(cache=True)
def _int(buf, p, end):
    """(value, position after) of a non-negative JSON integer that fits int64, or (-1, -1)."""
    v = 0
    k = p
    while k < end and 48 <= buf[k] <= 57:
        v = v * 10 + (buf[k] - 48)
        k += 1
    if k == p or k - p > 19 or (buf[p] == 48 and k - p > 1):
        return -1, -1
    if k - p == 19 and buf[p] > 56:  # could pass int64: the per-line path judges it
        return -1, -1
    return v, k


@njit(cache=True)
def _str(buf, p, end):
    """p at the opening quote -> position of the closing quote, or -1 (escapes, control or
    non-ASCII bytes are left to the per-line path)."""
    if p >= end or buf[p] != _Q:
        return -1
    k = p + 1
    while k < end:
        c = buf[k]
        if c == _Q:
            return k
        if c == _BS or c < 32 or c >= 128:
            return -1
        k += 1
    return -1


@njit(cache=True)
def _envelope(buf, s, end, head, src, exk, kind, opener):
    """The envelope of the line at [s, end) up to its payload, in the writer's fixed key order
    (`head` ts `src` "..." `exk` seq `kind`, the last literal ending in ``"data":``), then the
    payload's first byte `opener`. Returns (position after the opener and blanks, ts, seq);
    the position is -1 when the line does not fit (the per-line path takes it)."""
    p = _lit(buf, s, end, head)
    if p < 0:
        return -1, 0, 0
    ts, p = _int(buf, p, end)
    if p < 0:
        return -1, 0, 0
    p = _lit(buf, p, end, src)
    if p < 0:
        return -1, 0, 0
    q = _str(buf, p - 1, end)
    if q < 0:
        return -1, 0, 0
    p = _lit(buf, q + 1, end, exk)
    if p < 0:
        return -1, 0, 0
    seq, p = _int(buf, p, end)
    if p < 0:
        return -1, 0, 0
    p = _lit(buf, p, end, kind)
    if p < 0 or p >= end or buf[p] != opener:
        return -1, 0, 0
    return _ws(buf, p + 1, end), ts, seq


@njit(cache=True)
def _decimal(buf, s, e, positive):
    """venues.common fast decimal: [0-9]{1,20}(.[0-9]{1,18})?, and > 0 when `positive`."""
    n_int = 0
    n_frac = -1
    nonzero = False
    for k in range(s, e):
        c = buf[k]
        if c == _DOT:
            if n_frac >= 0:
                return False
            n_frac = 0
        elif 48 <= c <= 57:
            if c != 48:
                nonzero = True
            if n_frac >= 0:
                n_frac += 1
            else:
                n_int += 1
        else:
            return False
    if n_int < 1 or n_int > 20 or n_frac == 0 or n_frac > 18:
        return False
    return nonzero or not positive


@njit(cache=True)
def _digits(buf, s, n):
    v = 0
    for k in range(s, s + n):
        c = buf[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(cache=True)
def _levels_scan(buf, p, end, row, side_fixed, lv, n_lv, min_len, words):
    """Parse [[str, str, ...], ...] at p; append (row, side, px_s, px_e, sz_s, sz_e) rows to
    lv. Returns (position after, n_lv, lv) or (-1, ...)."""
    if p >= end or buf[p] != _LB:
        return -1, n_lv, lv
    p = _ws(buf, p + 1, end)
    if p < end and buf[p] == _RB:
        return p + 1, n_lv, lv
    while True:
        if p >= end or buf[p] != _LB:
            return -1, n_lv, lv
        p = _ws(buf, p + 1, end)
        k = 0
        a0 = a1 = b0 = b1 = c0 = c1 = 0
        while True:
            q = _str(buf, p, end)
            if q < 0:
                return -1, n_lv, lv
            if k == 0:
                a0, a1 = p + 1, q
            elif k == 1:
                b0, b1 = p + 1, q
            elif k == 2:
                c0, c1 = p + 1, q
            k += 1
            p, done = _next_item(buf, q + 1, end)
            if p < 0:
                return -1, n_lv, lv
            if done:
                break
        if k < min_len:
            return -1, n_lv, lv
        if n_lv == lv.shape[0]:
            grown = np.empty((lv.shape[0] * 2, 6), np.int64)
            grown[:n_lv] = lv[:n_lv]
            lv = grown
        if side_fixed >= 0:
            side = side_fixed
            px0, px1, sz0, sz1 = a0, a1, b0, b1
        else:
            side = -1
            for w in range(len(words)):
                if _eq(buf, a0, a1, words[w]):
                    side = 0 if w < 2 else 1
            if side < 0:
                return -1, n_lv, lv
            px0, px1, sz0, sz1 = b0, b1, c0, c1
        if not _decimal(buf, px0, px1, True) or not _decimal(buf, sz0, sz1, False):
            return -1, n_lv, lv
        lv[n_lv, 0] = row
        lv[n_lv, 1] = side
        lv[n_lv, 2] = px0
        lv[n_lv, 3] = px1
        lv[n_lv, 4] = sz0
        lv[n_lv, 5] = sz1
        n_lv += 1
        p, done = _next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv
        if done:
            return p, n_lv, lv


@njit(cache=True)
def _iso_raw(buf, s, e):
    """(ok, ns) of YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z without the plausibility range."""
    if e - s < 20 or buf[e - 1] != 90:  # Z
        return False, 0
    if buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 10] != 84:
        return False, 0
    if buf[s + 13] != _COLON or buf[s + 16] != _COLON:
        return False, 0
    y = _digits(buf, s, 4)
    mo = _digits(buf, s + 5, 2)
    d = _digits(buf, s + 8, 2)
    hh = _digits(buf, s + 11, 2)
    mi = _digits(buf, s + 14, 2)
    ss = _digits(buf, s + 17, 2)
    if y < 0 or mo < 0 or d < 0 or hh < 0 or mi < 0 or ss < 0:
        return False, 0
    frac = 0
    p = s + 19
    if p < e - 1:
        if buf[p] != _DOT:
            return False, 0
        nf = e - 1 - (p + 1)
        if nf < 1 or nf > 9:
            return False, 0
        frac = _digits(buf, p + 1, nf)
        if frac < 0:
            return False, 0
        for _ in range(9 - nf):
            frac *= 10
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mi < 60 and ss < 61):
        return False, 0
    yy = y - (1 if mo <= 2 else 0)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return True, (days * 86400 + hh * 3600 + mi * 60 + ss) * 1_000_000_000 + frac


@njit(cache=True)
def _plausible(ns):
    return 1_000_000_000_000_000_000 <= ns <= 4_102_444_800_000_000_000


@njit(cache=True)
def _iso_ns(buf, s, e):
    """As venues.common.iso_to_ns (with the plausibility check), or -1."""
    good, ns = _iso_raw(buf, s, e)
    if not good or not _plausible(ns):
        return -1
    return ns


@njit(cache=True)
def _grow(a, n):
    if n < a.shape[0]:
        return a
    grown = np.empty((a.shape[0] * 2, a.shape[1]), np.int64)
    grown[:n] = a[:n]
    return grown


@njit(cache=True)
def _key(buf, p, end):
    """At a key's opening quote: (key start, key end, position of its value) or (-1, -1, -1)."""
    q = _str(buf, p, end)
    if q < 0:
        return -1, -1, -1
    v = _ws(buf, q + 1, end)
    if v >= end or buf[v] != _COLON:
        return -1, -1, -1
    return p + 1, q, _ws(buf, v + 1, end)


@njit(cache=True)
def _next(buf, p, end):
    """After a value: (position of the next key, 0) after ',', (position after '}', 1) at the
    end of the object, or (-1, -1)."""
    p = _ws(buf, p, end)
    if p < end and buf[p] == _COMMA:
        return _ws(buf, p + 1, end), 0
    if p < end and buf[p] == _RC:
        return p + 1, 1
    return -1, -1


@njit(cache=True)
def _next_item(buf, p, end):
    """After an array element: (position of the next element, 0) after ',', (position after
    ']', 1) at the end of the array, or (-1, -1). The array twin of ``_next``."""
    p = _ws(buf, p, end)
    if p < end and buf[p] == _COMMA:
        return _ws(buf, p + 1, end), 0
    if p < end and buf[p] == _RB:
        return p + 1, 1
    return -1, -1


@njit(cache=True)
def _at_update(buf, p, end, m, is_update, lv, n_lv, words, keys):
    """One Advanced Trade update object {side, event_time?, price_level, new_quantity} at p.
    Returns (position after, n_lv, lv, max event ns (0 = none), ok)."""
    k_side, k_evt, k_px, k_qty = keys[0], keys[1], keys[2], keys[3]
    if p >= end or buf[p] != _LC:
        return -1, n_lv, lv, 0, False
    p = _ws(buf, p + 1, end)
    side = -1
    px0 = px1 = sz0 = sz1 = -1
    ev_ns = 0
    seen = 0
    while True:
        ks, ke, p = _key(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, 0, False
        q = _str(buf, p, end)
        if q < 0:
            return -1, n_lv, lv, 0, False
        if _eq(buf, ks, ke, k_side) and not seen & 1:
            seen |= 1
            for w in range(len(words)):
                if _eq(buf, p + 1, q, words[w]):
                    side = 0 if w < 2 else 1
            if side < 0:
                return -1, n_lv, lv, 0, False
        elif _eq(buf, ks, ke, k_evt) and not seen & 2:
            seen |= 2
            if is_update:  # snapshots carry 1970 times: the normalizer ignores them
                good, ns = _iso_raw(buf, p + 1, q)
                if not good:
                    return -1, n_lv, lv, 0, False
                if ns > 0:
                    if not _plausible(ns):
                        return -1, n_lv, lv, 0, False
                    ev_ns = ns
        elif _eq(buf, ks, ke, k_px) and not seen & 4:
            seen |= 4
            px0, px1 = p + 1, q
        elif _eq(buf, ks, ke, k_qty) and not seen & 8:
            seen |= 8
            sz0, sz1 = p + 1, q
        else:
            return -1, n_lv, lv, 0, False
        p, done = _next(buf, q + 1, end)
        if p < 0:
            return -1, n_lv, lv, 0, False
        if done:
            break
    if (seen & 13) != 13:
        return -1, n_lv, lv, 0, False
    if not _decimal(buf, px0, px1, True) or not _decimal(buf, sz0, sz1, False):
        return -1, n_lv, lv, 0, False
    lv = _grow(lv, n_lv)
    lv[n_lv, 0] = m
    lv[n_lv, 1] = side
    lv[n_lv, 2] = px0
    lv[n_lv, 3] = px1
    lv[n_lv, 4] = sz0
    lv[n_lv, 5] = sz1
    return p, n_lv + 1, lv, ev_ns, True


@njit(cache=True)
def _at_data(buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, words, heads, at_keys):
    """Advanced Trade l2_data object (p just after its '{'): one message per event.
    Returns (position after the object, n_msg, msg, n_lv, lv) or p = -1."""
    k_type, k_prod, v_snap = heads[4], heads[5], heads[11]
    k_channel, k_client, k_stamp, k_seqnum, k_events = (
        at_keys[0],
        at_keys[1],
        at_keys[2],
        at_keys[3],
        at_keys[4],
    )
    v_l2data, v_update, k_updates = at_keys[5], at_keys[6], at_keys[7]
    upd_keys = (at_keys[8], at_keys[9], at_keys[10], at_keys[11])
    seen = 0
    ts_msg = -1
    final_id = -1
    first_msg = n_msg
    while True:
        ks, ke, p = _key(buf, p, end)
        if p < 0:
            return -1, n_msg, msg, n_lv, lv
        if _eq(buf, ks, ke, k_channel) and not seen & 1:
            seen |= 1
            q = _str(buf, p, end)
            if q < 0 or not _eq(buf, p + 1, q, v_l2data):
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif _eq(buf, ks, ke, k_client) and not seen & 2:
            seen |= 2
            q = _str(buf, p, end)
            if q < 0:
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif _eq(buf, ks, ke, k_stamp) and not seen & 4:
            seen |= 4
            q = _str(buf, p, end)
            if q < 0:
                return -1, n_msg, msg, n_lv, lv
            ts_msg = _iso_ns(buf, p + 1, q)
            if ts_msg < 0:
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif _eq(buf, ks, ke, k_seqnum) and not seen & 8:
            seen |= 8
            final_id, p = _int(buf, p, end)
            if p < 0:
                return -1, n_msg, msg, n_lv, lv
        elif _eq(buf, ks, ke, k_events) and not seen & 16:
            seen |= 16
            if p >= end or buf[p] != _LB:
                return -1, n_msg, msg, n_lv, lv
            p = _ws(buf, p + 1, end)
            if p < end and buf[p] == _RB:
                p += 1
            else:
                while True:  # one event object
                    if p >= end or buf[p] != _LC:
                        return -1, n_msg, msg, n_lv, lv
                    p = _ws(buf, p + 1, end)
                    msg = _grow(msg, n_msg)
                    m = n_msg
                    n_msg += 1
                    ev_seen = 0
                    kind = 0
                    prod_s = prod_e = -1
                    ev_ns = 0
                    while True:
                        ks2, ke2, p = _key(buf, p, end)
                        if p < 0:
                            return -1, n_msg, msg, n_lv, lv
                        if _eq(buf, ks2, ke2, k_type) and not ev_seen & 1:
                            ev_seen |= 1
                            q = _str(buf, p, end)
                            if q < 0:
                                return -1, n_msg, msg, n_lv, lv
                            if _eq(buf, p + 1, q, v_update):
                                kind = 1
                            elif _eq(buf, p + 1, q, v_snap):
                                kind = 2
                            else:
                                return -1, n_msg, msg, n_lv, lv
                            p = q + 1
                        elif _eq(buf, ks2, ke2, k_prod) and not ev_seen & 2:
                            ev_seen |= 2
                            q = _str(buf, p, end)
                            if q < 0:
                                return -1, n_msg, msg, n_lv, lv
                            prod_s, prod_e = p + 1, q
                            p = q + 1
                        elif _eq(buf, ks2, ke2, k_updates) and not ev_seen & 4 and ev_seen & 1:
                            # "type" must come first: event_time rules depend on it
                            ev_seen |= 4
                            if p >= end or buf[p] != _LB:
                                return -1, n_msg, msg, n_lv, lv
                            p = _ws(buf, p + 1, end)
                            if p < end and buf[p] == _RB:
                                p += 1
                            else:
                                while True:
                                    p, n_lv, lv, ns, good = _at_update(
                                        buf, p, end, m, kind == 1, lv, n_lv, words, upd_keys
                                    )
                                    if not good:
                                        return -1, n_msg, msg, n_lv, lv
                                    if ns > ev_ns:
                                        ev_ns = ns
                                    p, done = _next_item(buf, p, end)
                                    if p < 0:
                                        return -1, n_msg, msg, n_lv, lv
                                    if done:
                                        break
                        else:
                            return -1, n_msg, msg, n_lv, lv
                        p, done = _next(buf, p, end)
                        if p < 0:
                            return -1, n_msg, msg, n_lv, lv
                        if done:
                            break
                    if ev_seen != 7:
                        return -1, n_msg, msg, n_lv, lv
                    msg[m, 0] = i
                    msg[m, 1] = ts
                    msg[m, 2] = seq
                    msg[m, 3] = kind
                    msg[m, 4] = ev_ns  # 0 = none yet: the message timestamp below
                    msg[m, 5] = prod_s
                    msg[m, 6] = prod_e
                    p, done = _next_item(buf, p, end)
                    if p < 0:
                        return -1, n_msg, msg, n_lv, lv
                    if done:
                        break
        else:
            return -1, n_msg, msg, n_lv, lv
        p, done = _next(buf, p, end)
        if p < 0:
            return -1, n_msg, msg, n_lv, lv
        if done:
            break
    if (seen & (1 | 4 | 16)) != (1 | 4 | 16):
        return -1, n_msg, msg, n_lv, lv
    for m in range(first_msg, n_msg):
        if msg[m, 4] <= 0:
            msg[m, 4] = ts_msg
        msg[m, 7] = final_id
    return p, n_msg, msg, n_lv, lv


@njit(cache=True)
def _scan_lines(buf, starts, ends, words, heads, at_keys, capacity):
    """Scan every line. Per accepted line: its book messages (msg rows: line, ts, seq, kind
    1 update / 2 snapshot, ts_event, product span, final id) and their levels (lv rows:
    message, side, price span, size span). A line with any surprise is not accepted (the
    per-line path takes it)."""
    env_head, env_src, env_ex, env_kind = heads[0], heads[1], heads[2], heads[3]
    k_type, k_prod, k_time, k_chg = heads[4], heads[5], heads[6], heads[7]
    k_bids, k_asks, v_l2, v_snap = heads[8], heads[9], heads[10], heads[11]
    k_channel = at_keys[0]
    n = len(starts)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, 8), np.int64)
    n_msg = 0
    lv = np.empty((capacity, 6), np.int64)
    n_lv = 0
    for i in range(n):
        s, end = starts[i], ends[i]
        mark_lv, mark_msg = n_lv, n_msg
        p, ts, seq = _envelope(buf, s, end, env_head, env_src, env_ex, env_kind, _LC)
        if p < 0:
            continue
        bad = False
        ks, ke, v = _key(buf, p, end)
        if v >= 0 and _eq(buf, ks, ke, k_channel):
            p, n_msg, msg, n_lv, lv = _at_data(
                buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, words, heads, at_keys
            )
            bad = p < 0
        else:
            m = n_msg
            kind = 0
            t_ns = -1
            prod_s = prod_e = -1
            seen = 0
            while not bad:
                ks, ke, p = _key(buf, p, end)
                if p < 0:
                    bad = True
                    break
                if _eq(buf, ks, ke, k_type) and not seen & 1:
                    seen |= 1
                    q = _str(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    if _eq(buf, p + 1, q, v_l2):
                        kind = 1
                    elif _eq(buf, p + 1, q, v_snap):
                        kind = 2
                    else:
                        bad = True
                        break
                    p = q + 1
                elif _eq(buf, ks, ke, k_prod) and not seen & 2:
                    seen |= 2
                    q = _str(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    prod_s, prod_e = p + 1, q
                    p = q + 1
                elif _eq(buf, ks, ke, k_time) and not seen & 4:
                    seen |= 4
                    q = _str(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    t_ns = _iso_ns(buf, p + 1, q)
                    p = q + 1
                elif _eq(buf, ks, ke, k_chg) and not seen & 8:
                    seen |= 8
                    p, n_lv, lv = _levels_scan(buf, p, end, m, -1, lv, n_lv, 3, words)
                elif _eq(buf, ks, ke, k_bids) and not seen & 16:
                    seen |= 16
                    p, n_lv, lv = _levels_scan(buf, p, end, m, 0, lv, n_lv, 2, words)
                elif _eq(buf, ks, ke, k_asks) and not seen & 32:
                    seen |= 32
                    p, n_lv, lv = _levels_scan(buf, p, end, m, 1, lv, n_lv, 2, words)
                else:
                    bad = True  # other keys (or duplicates): the normalizer decides
                    break
                if p < 0:
                    bad = True
                    break
                p, done = _next(buf, p, end)
                if p < 0:
                    bad = True
                    break
                if done:
                    break
            if not bad:
                if kind == 1:
                    need = 2 | 4 | 8
                    bad = (seen & need) != need or t_ns < 0 or (seen & (16 | 32)) != 0
                elif kind == 2:
                    need = 2 | 16 | 32
                    bad = (seen & need) != need or (seen & 8) != 0
                    if (seen & 4) and t_ns < 0:
                        bad = True  # an unparsable extra time: let the normalizer see it
                    t_ns = ts
                else:
                    bad = True
            if not bad:
                msg = _grow(msg, n_msg)
                msg[m, 0] = i
                msg[m, 1] = ts
                msg[m, 2] = seq
                msg[m, 3] = kind
                msg[m, 4] = t_ns
                msg[m, 5] = prod_s
                msg[m, 6] = prod_e
                msg[m, 7] = -1
                n_msg += 1
        if not bad:
            p = _ws(buf, p, end)
            bad = p >= end or buf[p] != _RC or p + 1 != end
        if bad:
            n_lv, n_msg = mark_lv, mark_msg  # drop this line's messages and levels
            continue
        ok[i] = True
    return ok, msg[:n_msg], lv[:n_lv]


_HEADS = (
    _ENV_HEAD, _ENV_SRC, _ENV_EX, _ENV_KIND, _K_TYPE, _K_PRODUCT, _K_TIME, _K_CHANGES,
    _K_BIDS, _K_ASKS, _V_L2, _V_SNAP,
)  # fmt: skip
# Advanced Trade l2_data: {"channel","client_id","timestamp","sequence_num","events":[{"type",
# "product_id","updates":[{"side","event_time","price_level","new_quantity"}]}]}
_AT_KEYS = tuple(
    np.frombuffer(w, np.uint8).copy()
    for w in (
        b"channel", b"client_id", b"timestamp", b"sequence_num", b"events", b"l2_data",
        b"update", b"updates", b"side", b"event_time", b"price_level", b"new_quantity",
    )
)  # fmt: skip


@njit(cache=True)
def _gather(buf, s, e):
    lens = e - s
    offsets = np.zeros(len(s) + 1, np.int64)
    for i in range(len(s)):
        offsets[i + 1] = offsets[i] + lens[i]
    out = np.empty(offsets[-1], np.uint8)
    for i in range(len(s)):
        out[offsets[i] : offsets[i + 1]] = buf[s[i] : e[i]]
    return out, offsets


def _spans(buf: np.ndarray, s: np.ndarray, e: np.ndarray, large: bool = False) -> pa.Array:
    """Arrow strings from (start, end) byte spans of `buf` (ASCII, checked by the scanner)."""
    data, offsets = _gather(buf, np.ascontiguousarray(s), np.ascontiguousarray(e))
    if large:
        return pa.LargeStringArray.from_buffers(len(s), pa.py_buffer(offsets), pa.py_buffer(data))
    return pa.StringArray.from_buffers(
        len(s), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
    )


def fast_coinbase_books(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[dict[tuple[str, str], FastBook], np.ndarray]:
    """Coinbase Exchange `l2update`/`snapshot` lines (given as byte spans of the segment)
    -> FastBooks and a mask of the lines they took; every other line (and any line failing a
    check) is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0:
        return {}, none
    ok, msg, lv = _scan_lines(
        buf, starts, ends, _SIDE_WORDS, _HEADS, _AT_KEYS, 4096 + len(buf) // 256
    )
    if not ok.any():
        return {}, none
    # product -> symbol with the venue's own function (unique values only)
    from fluxforge.venues import coinbase

    msg_line = msg[:, 0]
    pid = _spans(buf, msg[:, 5], msg[:, 6]).dictionary_encode()
    symbols: list[str | None] = []
    for raw in pid.dictionary.to_pylist():
        try:
            sym = coinbase._symbol_of(raw)
        except (NormalizeError, TypeError):
            sym = None
        symbols.append(sym if sym is not None and _safe_symbol(sym) else None)
    codes = pid.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    msg_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    # one instrument = one raw product name (one batch carries one venue symbol)
    by_symbol: dict[str, list[int]] = {}
    for c in np.unique(codes[msg_ok]).tolist():
        by_symbol.setdefault(symbols[c], []).append(c)  # type: ignore[arg-type]
    for cs in by_symbol.values():
        if len(cs) > 1:
            msg_ok &= ~np.isin(codes, cs)
    # a line is taken whole or not at all
    ok[msg_line[~msg_ok]] = False
    msg_ok = ok[msg_line]
    if not ok.any():
        return {}, none

    row_of, side = lv[:, 0], lv[:, 1].astype(np.uint8)
    keep = msg_ok[row_of]
    order = np.lexsort((np.arange(len(row_of)), side, row_of))
    order = order[keep[order]]
    row_sorted = row_of[order]
    side_sorted = side[order]
    price_sorted = _spans(buf, lv[order, 2], lv[order, 3], large=True)
    size_sorted = _spans(buf, lv[order, 4], lv[order, 5], large=True)
    counts = np.bincount(row_sorted, minlength=len(msg))
    starts_lv = np.concatenate(([0], np.cumsum(counts)[:-1]))
    dictionary = pid.dictionary.to_pylist()
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(codes[msg_ok]).tolist()):
        sel = np.flatnonzero(msg_ok & (codes == c))
        lens = counts[sel]
        offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        lvl_idx = np.repeat(starts_lv[sel] - offsets[:-1], lens) + np.arange(offsets[-1])
        take = pa.array(lvl_idx, pa.int64())
        sym = symbols[c]
        assert sym is not None
        out[("coinbase", sym)] = FastBook(
            exchange="coinbase",
            symbol=sym,
            venue_symbol=dictionary[c],
            channel=FAST_CHANNEL,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, 4],
            ts_recv=msg[sel, 1],
            seq=msg[sel, 2],
            is_snapshot=msg[sel, 3] == 2,
            level_offsets=offsets,
            side=side_sorted[lvl_idx],
            price=price_sorted.take(take),
            size=size_sorted.take(take),
            final_id=msg[sel, 7],
        )
    return out, ok
