"""Demultiplex one raw segment: envelope -> venue normalizer -> columns per (table, exchange,
symbol, date).

The hot path is one ``orjson`` parse per line (``parse_envelope``) and one call into the
venue's ``normalize``; the normalizers append plain strings/ints to column lists
(``EventSink``), and everything after that is vectorized: Arrow arrays built from the lists
in one go, prices and sizes cast from the exact wire strings to decimal128(38, 18) by Arrow's
cast kernel, rows split by (exchange, symbol, UTC date of ts_recv) with one stable argsort.

Every non-blank line lands in exactly one of three classes (``lines_in == data + quarantined +
control``, checked): data (the normalizer used it, possibly producing zero rows), control
(ctl records, heartbeats, acks, metadata) or quarantined (with a reason).
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

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
FAST_PATH = True  # columnar path for Coinbase book lines (tests switch it off to compare)
_RAW_KEEP = 1 << 20  # a quarantined line is kept whole up to 1 MiB, then cut (reason says so)


class LineAccountingError(AssertionError):
    """lines in != data + quarantined + control for a segment: a refinery bug, never skipped."""


@dataclass(slots=True)
class CtlEvent:
    exchange: str
    ts_recv: int
    event: str
    book_pos: int  # line number of the ctl record: book messages on earlier lines are older


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
    tops: list[TopOfBook] = field(default_factory=list)
    normalizer_errors: int = 0  # unexpected exceptions in normalizers (quarantined too)

    def books_by_instrument(self) -> dict[tuple[str, str], list[tuple[int, BookMessage]]]:
        """(exchange, symbol) -> [(line number, message)] in receive order, for the messages
        of the per-line path (the columnar fast path's are in ``fast_books``)."""
        out: dict[tuple[str, str], list[tuple[int, BookMessage]]] = {}
        for line, msg in zip(self.book_lines, self.book_messages, strict=True):
            out.setdefault((msg.exchange, msg.symbol), []).append((line, msg))
        return out

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
    lines = data.split(b"\n")
    taken: set[int] | frozenset[int] = frozenset()
    if fast and not poison:
        res.fast_books, taken = fast_coinbase_books(lines)
        n_data = len(taken)

    for line_no, line in enumerate(lines, 1):
        if not line or line.isspace():
            continue
        lines_in += 1
        if line_no in taken:
            continue
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
                res.ctl.append(CtlEvent(ex, env.ts, event, line_no))
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
        if cls == "data":
            n_data += 1
            if len(books) != nb:
                book_lines.extend([line_no] * (len(books) - nb))
        elif cls == "control":
            n_control += 1
            if len(books) != nb:
                book_lines.extend([line_no] * (len(books) - nb))
        else:
            _rollback(sink, marks)
            reason = f"normalizer {ex} returned {cls!r} (expected 'data' or 'control')"
            quarantine.add(_safe_exchange(ex), line_no, env.seq, env.ts, reason, line)

    res.lines_in = lines_in
    res.data = n_data
    res.control = n_control
    res.quarantined = len(quarantine.line_no)
    res.trades = _columns(sink.trades, TRADES)
    res.quotes = _columns(sink.quotes, QUOTES)
    res.quarantine = quarantine.table(segment)
    res.book_messages = books
    res.tops = tops
    return res


def _rollback(sink: EventSink, marks: tuple[int, int, int, int]) -> None:
    nt, nq, nb, ntop = marks
    for col in sink.trades.values():
        del col[nt:]
    for col in sink.quotes.values():
        del col[nq:]
    del sink.books[nb:]
    del sink.tops[ntop:]


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
# orjson + the per-line normalizer costs ~10 us a line; here those lines are selected with
# byte tests, parsed in one go by Arrow's JSON reader, validated with vectorized kernels to
# exactly the rules of fluxforge.venues.coinbase (plain decimals, price > 0, side, product,
# RFC 3339 time) and handed to the book kernel as columns (BookBatch.from_columns), never as
# Python objects. A line that fails any check simply goes through the per-line path, which
# gives it the normalizer's own treatment and quarantine reason: the fast path only ever
# decides "certainly fine", so both paths produce the same tables (tested).

_FAST_EX = b',"ex":"coinbase","seq":'
_FAST_TYPES = (b'"type":"l2update"', b'"type":"snapshot"')
_LEVELS = pa.list_(pa.list_(pa.string()))
_FAST_SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        ("src", pa.string()),
        ("ex", pa.string()),
        ("seq", pa.int64()),
        ("kind", pa.string()),
        (
            "data",
            pa.struct(
                [
                    ("type", pa.string()),
                    ("product_id", pa.string()),
                    ("time", pa.string()),
                    ("changes", _LEVELS),
                    ("bids", _LEVELS),
                    ("asks", _LEVELS),
                    ("channel", pa.string()),  # Advanced Trade shape: not for this path
                    ("method", pa.string()),  # ccxt-source shape: not for this path
                ]
            ),
        ),
    ]
)
_DEC_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"  # venues.common fast decimal: always in range
_ZERO_PATTERN = r"^[0.]*$"
_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
_BID_SIDES = ("buy", "bid")
_ASK_SIDES = ("sell", "offer", "ask")
# plausible event times, as venues.common.check_ts
_TS_MIN_NS = 1_000_000_000 * 1_000_000_000
_TS_MAX_NS = 4_102_444_800 * 1_000_000_000
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

    def __len__(self) -> int:
        return len(self.line)

    def batch(self, start: int, end: int) -> Any:
        """Messages [start, end) as the book kernel's columnar batch."""
        from fluxforge.book import BookBatch

        lo, hi = int(self.level_offsets[start]), int(self.level_offsets[end])
        return BookBatch.from_columns(
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
        )

    def to_messages(self) -> list[tuple[int, BookMessage]]:
        """The same messages as objects (for mixing with per-line messages of other shapes)."""
        px, sz = self.price.to_pylist(), self.size.to_pylist()
        out = []
        for i in range(len(self)):
            lo, hi = int(self.level_offsets[i]), int(self.level_offsets[i + 1])
            bids = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 0]
            asks = [(px[j], sz[j]) for j in range(lo, hi) if self.side[j] == 1]
            msg = BookMessage(
                self.exchange, self.symbol, self.venue_symbol, self.channel,
                int(self.ts_event[i]), int(self.ts_recv[i]), int(self.seq[i]),
                bool(self.is_snapshot[i]), bids, asks,
            )  # fmt: skip
            out.append((int(self.line[i]), msg))
        return out


def merge_columns(fast: FastBook, msgs: list[tuple[int, BookMessage]]) -> FastBook | None:
    """`fast` plus per-line messages of the same instrument, in line order, as columns; None
    when a per-line message carries what the columns cannot (other channel/product, ids,
    checksums, venue depth, REST origin)."""
    if not msgs:
        return fast
    for _, m in msgs:
        if (
            m.channel != fast.channel
            or m.venue_symbol != fast.venue_symbol
            or m.checksum is not None
            or m.chain is not None
            or m.depth
            or m.from_rest
            or (m.first_id, m.final_id, m.prev_id) != (-1, -1, -1)
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

    del n_fast
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
        level_offsets=offsets,
        side=all_side[lvl_idx],
        price=all_px.take(take),
        size=all_sz.take(take),
    )


def _np(arr: pa.Array, fill: int = -1) -> np.ndarray:
    return arr.fill_null(fill).to_numpy(zero_copy_only=False)


def _valid(arr: pa.Array) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _match(arr: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(arr, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def _levels(
    lists: pa.ListArray, rows: np.ndarray, side: np.ndarray | None, min_len: int
) -> tuple[np.ndarray, np.ndarray, pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """Flatten [[a, b, c...]...] per row -> (row, ok, first, second, third-or-None, side)."""
    outer_len = _np(pc.list_value_length(lists), 0)
    row_of = np.repeat(rows, outer_len)
    inner = lists.flatten()  # one entry per level (a list of strings)
    inner_len = _np(pc.list_value_length(inner), 0)
    ok = _valid(inner) & (inner_len >= min_len)
    values = inner.values  # offsets index this child directly
    starts = inner.offsets.to_numpy()[:-1]
    idx = [pa.array(np.where(ok, starts + k, 0)) for k in range(min_len)]
    if len(values) == 0:
        values = pa.array([""], pa.string())
        idx = [pa.array(np.zeros(len(inner), np.int64)) for _ in range(min_len)]
    first = values.take(idx[0])
    second = values.take(idx[1])
    third = values.take(idx[2]) if min_len > 2 else None
    ok &= _valid(first) & _valid(second)
    if third is not None:
        ok &= _valid(third)
    if side is None:  # l2update: [side, price, size]
        assert third is not None
        is_bid = pc.is_in(first, pa.array(_BID_SIDES)).to_numpy(zero_copy_only=False)
        is_ask = pc.is_in(first, pa.array(_ASK_SIDES)).to_numpy(zero_copy_only=False)
        ok &= is_bid | is_ask
        return row_of, ok, second, third, np.where(is_bid, 0, 1).astype(np.uint8), outer_len
    return row_of, ok, first, second, np.full(len(inner), side[0], np.uint8), outer_len


def fast_coinbase_books(lines: list[bytes]) -> tuple[dict[tuple[str, str], FastBook], set[int]]:
    """Coinbase Exchange `l2update`/`snapshot` lines -> FastBooks and the set of line numbers
    they took; every other line (and any line failing a check) is left to the per-line path."""
    cand_lines: list[int] = []
    cand: list[bytes] = []
    for no, line in enumerate(lines, 1):
        if _FAST_EX in line and (_FAST_TYPES[0] in line or _FAST_TYPES[1] in line):
            if b"\\u" in line or b"\r" in line:
                continue  # escapes / stray CR: let orjson judge them
            cand_lines.append(no)
            cand.append(line)
    if len(cand) < 64:
        return {}, set()
    body = b"\n".join(cand)
    try:
        table = pj.read_json(
            io.BytesIO(body),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=_FAST_SCHEMA, unexpected_field_behavior="ignore"
            ),
        ).combine_chunks()
        table.validate(full=True)  # invalid UTF-8 etc.
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        log.debug("fast path declined the segment (%s): per-line path for all", exc)
        return {}, set()
    n = table.num_rows
    if n != len(cand):
        return {}, set()
    col = {name: table.column(name).chunk(0) for name in table.column_names}
    data = col["data"]
    d = {f.name: data.field(f.name) for f in data.type}
    ts, seq = _np(col["ts"]), _np(col["seq"])
    kind = d["type"]
    is_upd = _match(kind, "^l2update$")
    is_snap = _match(kind, "^snapshot$")
    ok = (
        _valid(data)
        & (ts >= 0)
        & (seq >= 0)
        & _valid(col["src"])
        & _match(col["kind"], "^msg$")
        & _match(col["ex"], "^coinbase$")
        & ~_valid(d["channel"])
        & ~_valid(d["method"])
        & (is_upd | is_snap)
    )
    # product -> symbol with the venue's own function (unique values only)
    from fluxforge.venues import coinbase

    pid = d["product_id"].dictionary_encode()
    symbols: list[str | None] = []
    for raw in pid.dictionary.to_pylist():
        try:
            sym = coinbase._symbol_of(raw)
        except (NormalizeError, TypeError):
            sym = None
        symbols.append(sym if sym is not None and _safe_symbol(sym) else None)
    codes = _np(pid.indices, -1)
    sym_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)
    ok &= sym_ok[codes]
    # event time: RFC 3339 UTC for updates; snapshots carry none (ts_recv is used)
    times = d["time"]
    ts_event = ts.copy()
    time_ok = _match(times, _TIME_PATTERN)
    if is_upd.any():
        good_times = pc.if_else(pa.array(time_ok & is_upd), times, "1970-01-01T00:00:00Z")
        try:
            parsed = _np(good_times.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()), 0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return {}, set()  # e.g. month 13 somewhere: the per-line path reports it
        ts_event = np.where(is_upd, parsed, ts)
        ok &= ~is_upd | (time_ok & (parsed >= _TS_MIN_NS) & (parsed <= _TS_MAX_NS))
        ok &= ~is_upd | _valid(d["changes"])
    ok &= ~is_snap | (_valid(d["bids"]) & _valid(d["asks"]))

    rows = np.arange(n, dtype=np.int64)
    upd_rows = np.flatnonzero(is_upd)
    snap_rows = np.flatnonzero(is_snap)
    parts = [
        _levels(d["changes"].take(pa.array(upd_rows)), upd_rows, None, 3),
        _levels(d["bids"].take(pa.array(snap_rows)), snap_rows, np.array([0]), 2),
        _levels(d["asks"].take(pa.array(snap_rows)), snap_rows, np.array([1]), 2),
    ]
    row_of = np.concatenate([p[0] for p in parts])
    lvl_ok = np.concatenate([p[1] for p in parts])
    price = pa.concat_arrays([p[2] for p in parts])
    size = pa.concat_arrays([p[3] for p in parts])
    side = np.concatenate([p[4] for p in parts])
    lvl_ok &= _match(price, _DEC_PATTERN) & ~_match(price, _ZERO_PATTERN)
    lvl_ok &= _match(size, _DEC_PATTERN)
    bad_rows = np.bincount(row_of[~lvl_ok], minlength=n) if len(row_of) else np.zeros(n, int)
    ok &= bad_rows == 0
    del rows
    # an instrument whose rows name several raw products cannot share one batch: per-line
    keep_codes = np.unique(codes[ok])
    sym_of_code = {int(c): symbols[int(c)] for c in keep_codes}
    by_symbol: dict[str, list[int]] = {}
    for c, sym in sym_of_code.items():
        by_symbol.setdefault(sym, []).append(c)  # type: ignore[arg-type]
    for cs in by_symbol.values():
        if len(cs) > 1:
            ok &= ~np.isin(codes, cs)
    if not ok.any():
        return {}, set()

    # levels of accepted rows, per message bids first then asks (stable within a side)
    lvl_keep = ok[row_of]
    order = np.lexsort((np.arange(len(row_of)), side, row_of))
    order = order[lvl_keep[order]]
    row_sorted = row_of[order]
    side_sorted = side[order]
    take = pa.array(order)
    price_sorted = price.take(take).cast(pa.large_string())
    size_sorted = size.take(take).cast(pa.large_string())
    counts = np.bincount(row_sorted, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    line_arr = np.asarray(cand_lines, dtype=np.int64)
    dictionary = pid.dictionary.to_pylist()
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(int(c) for c in np.unique(codes[ok])):
        sel = np.flatnonzero(ok & (codes == c))
        lens = counts[sel]
        offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        lvl_idx = np.repeat(starts[sel] - offsets[:-1], lens) + np.arange(offsets[-1])
        lvl_take = pa.array(lvl_idx, pa.int64())
        sym = symbols[c]
        assert sym is not None
        out[("coinbase", sym)] = FastBook(
            exchange="coinbase",
            symbol=sym,
            venue_symbol=dictionary[c],
            channel=FAST_CHANNEL,
            line=line_arr[sel],
            ts_event=ts_event[sel],
            ts_recv=ts[sel],
            seq=seq[sel],
            is_snapshot=is_snap[sel],
            level_offsets=offsets,
            side=side_sorted[lvl_idx],
            price=price_sorted.take(lvl_take),
            size=size_sorted.take(lvl_take),
        )
    taken = set(line_arr[ok].tolist())
    return out, taken
