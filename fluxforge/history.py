"""History backfill through ccxt REST (docs/architecture.md, "Backfills"): OHLCV and trades of one
(exchange, symbol, [start, end)) fetched with ccxt's ``fetch_ohlcv`` / ``fetch_trades``, paged
by ``since``/``limit`` under ccxt's own rate limiter, and written into the lake (and into the
PostgreSQL hot tables for days inside the hot window).

Range: half-open ``[start, end)``. A trade is kept when ``start <= timestamp < end``; a bar when
its OPEN time is in ``[start, end)`` (a bar opening just before ``start`` is not fetched even if
it closes inside the range).

Where the rows go (``{processed_dir}`` of the ETL output storage, hive dirs as everywhere):

* trades -> the normal ``trades`` table, one part per UTC day:
  ``trades/exchange=E/symbol=S/date=D/part-history.parquet``. A REST trade has no receive time:
  ``ts_recv = ts_event`` = the exchange's trade time, so ``date`` is the UTC date of the trade.
  ``seq`` (no daemon line exists) is the venue trade id when it is an integer that fits int64
  (Binance), else a stable 63-bit hash of the id: re-loading gives the same natural keys in the
  hot store.
* OHLCV -> the ``ohlcv`` table (``fluxforge.tables.OHLCV``: ``ts`` = bar open in ns,
  ``interval``, open/high/low/close/volume as decimal(38,12), ``trade_count`` nullable (ccxt's
  unified candle has none)), one part per UTC day (of ``ts``) and interval:
  ``ohlcv/exchange=E/symbol=S/date=D/part-history-{interval}.parquet``. Only this module writes
  it; the SQL bars (``bars_*``) and the hot ``bars_*`` stay derived from trades, so REST
  candles are never loaded into the hot store.

Paging: OHLCV by open time (``since`` = last open + one interval). Trades by a time cursor
(``since`` = time of the last trade seen, ids seen twice dropped); venues whose trade query is a
bounded window (Binance ``aggTrades``: ``endTime = since + 1 h``) step one window on an empty
page, and venues that page exactly by id (Binance ``fromId``) follow the ids after the first
page. Requests go through ccxt's rate limiter (``enableRateLimit``, the exchange's
``rateLimit``); 429s and network errors are retried with backoff.

Idempotence: a day's history part is read back, the rows of the fetched range are replaced by
what was fetched (rows outside the range are kept, so two disjoint backfills of one day add
up), rows are de-duplicated on (time, trade id) (bars on (ts, interval)), sorted, and the file
is rewritten with deterministic bytes. Re-running the same backfill rewrites identical files.

No duplicates with the streaming path: when a history part is written, every trade whose
``trade_id`` already appears in a streaming part (any trades part other than
``part-history.parquet``) of the same exchange/symbol on the day before, the day itself or the
day after (streamed rows are filed by receive date, which can be the next day near midnight) is
left out. So a backfill fills the holes of streamed days (reconnects, outages) without
repeating what was streamed. If streaming parts arrive for a day AFTER its backfill, re-run the
backfill for that day: the history part is recomputed against the streaming parts present then
(and the SQL staging model already de-duplicates on trade_id meanwhile). Trade ids are compared
as strings in the id space of ccxt's default endpoint: for Binance that is the aggregate trade
id (``aggTrades``), which the ``aggTrade`` stream also carries. Streamed trades without an id
(Kraken's v1 feed) cannot be matched: do not backfill days such a stream already covers.

Hot store: the written trades parts of days inside the hot window are loaded with
``fluxforge.hot.load_keys`` (insert-only on its natural keys, so rows a later re-run leaves out
of a part stay in the hot table until that day rotates).

Trades without an id get ``trade_id = ""`` and are de-duplicated on (time, price, size, side).
Prices and sizes: ccxt hands out floats; each becomes the shortest decimal string that
round-trips (``venues.common.float_to_decimal``), i.e. the venue's own string.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fluxforge import lake, schemas
from fluxforge.config import Config
from fluxforge.events import NormalizeError
from fluxforge.storage import Layout, Storage, open_storage
from fluxforge.tables import OHLCV, TRADES
from fluxforge.venues.ccxt_unified import is_ccxt_exchange, venue_symbol_to_symbol
from fluxforge.venues.common import float_to_decimal

log = logging.getLogger(__name__)

What = Literal["ohlcv", "trades", "both"]
WHATS = ("ohlcv", "trades", "both")
HISTORY_STEM = "history"
NS_PER_MS = 1_000_000
DAY_NS = 86_400 * 1_000_000_000
DEFAULT_LIMIT = 1000
_SYMBOL_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$"
)
_TIMEFRAME_RE = re.compile(r"^[1-9][0-9]*[smhdwMy]$")
_INT64_ID = re.compile(r"^[0-9]{1,18}$")

# Venues whose trade endpoint pages exactly by trade id (Binance ``fromId``: "trade id to fetch
# from, inclusive"): after the first page found by time, the next ones follow by id, so trades
# sharing one millisecond are never cut at a page boundary.
_FROM_ID_PAGING = frozenset({"binance", "binanceus", "binanceusdm", "binancecoinm"})
# Venues whose time-based trade query is a bounded window (ccxt sends Binance
# ``endTime = since + 1 h``): an empty page there means "nothing in this window", not "nothing
# after since", so the cursor steps one window on.
_TRADE_WINDOW_MS = {name: 3_600_000 for name in _FROM_ID_PAGING}


class HistoryError(ValueError):
    """A backfill argument or an exchange response is unusable; the message says which."""


@dataclass
class HistoryReport:
    exchange: str
    symbol: str  # normalized BASE-QUOTE
    venue_symbol: str
    start_ns: int
    end_ns: int
    what: str
    timeframe: str
    requests: int = 0
    trades_fetched: int = 0
    trades_written: int = 0
    trades_already_streamed: int = 0
    bars_fetched: int = 0
    bars_written: int = 0
    files: list[str] = field(default_factory=list)
    trade_parts: list[str] = field(default_factory=list)  # written trades parts (hot loading)
    bytes: int = 0
    hot_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    days: int = 0  # UTC days fetched and written
    days_skipped: int = 0  # days a previous run finished (resume)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "venue_symbol": self.venue_symbol,
            "start": _iso(self.start_ns),
            "end": _iso(self.end_ns),
            "what": self.what,
            "timeframe": self.timeframe,
            "requests": self.requests,
            "trades_fetched": self.trades_fetched,
            "trades_written": self.trades_written,
            "trades_already_streamed": self.trades_already_streamed,
            "bars_fetched": self.bars_fetched,
            "bars_written": self.bars_written,
            "files": list(self.files),
            "bytes": self.bytes,
            "hot_rows": dict(self.hot_rows),
            "seconds": round(self.seconds, 3),
            "days": self.days,
            "days_skipped": self.days_skipped,
        }


def _iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    frac = ns % 1_000_000_000
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}Z" if frac else f"{text}Z"


def _day(ns: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ns // DAY_NS)


def day_slices(start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """[start, end) cut at UTC midnights: one half-open slice per day touched."""
    out = []
    t0 = start_ns
    while t0 < end_ns:
        t1 = min(end_ns, (t0 // DAY_NS + 1) * DAY_NS)
        out.append((t0, t1))
        t0 = t1
    return out


def _done_days(storage: Storage, key: str) -> list[str]:
    """Day slices a previous run recorded as finished (none when the record is unreadable)."""
    if not storage.exists(key):
        return []
    try:
        days = orjson.loads(storage.read_bytes(key))
    except orjson.JSONDecodeError:
        log.warning("%s: unreadable history progress record; fetching every day", key)
        return []
    return [d for d in days if isinstance(d, str)] if isinstance(days, list) else []


# ------------------------------------------------------------------------------ the exchange


def open_exchange(
    exchange: str,
    options: dict[str, Any] | None = None,
    markets: list[dict[str, Any]] | None = None,
) -> Any:
    """A ccxt (sync) exchange with its rate limiter on. ``options`` is deep-merged into the
    ccxt constructor config (e.g. ``{"urls": {"api": {"public": "http://127.0.0.1:8080/api/v3"}},
    "rateLimit": 50}``); ``markets`` (ccxt market dicts) are installed with ``set_markets`` so
    no ``load_markets`` request is made."""
    if not is_ccxt_exchange(exchange):
        raise HistoryError(
            f"exchange {exchange!r}: not a ccxt exchange id (e.g. binance, coinbase, kraken)"
        )
    import ccxt  # imported here: it takes seconds and only this path needs it

    config: dict[str, Any] = {"enableRateLimit": True, **(options or {})}
    ex = getattr(ccxt, exchange)(config)
    if markets:
        ex.set_markets(markets)
    return ex


# Backoff of a throttled / failing request: full-jitter exponential from RETRY_FIRST_S (or the
# venue's rateLimit when larger), each wait capped at RETRY_CAP_S, RETRY_ATTEMPTS tries in all
# (about a minute of retrying at worst before the command gives up, the cause in its message).
RETRY_ATTEMPTS = 8
RETRY_FIRST_S = 0.5
RETRY_CAP_S = 30.0


def _log_retry(exchange: str, method: str, attempts: int, state: Any) -> None:
    cause = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "%s %s: %s; retry %d/%d in %.2f s",
        exchange, method, cause, state.attempt_number, attempts - 1, wait,
    )  # fmt: skip


def _retrying(ex: Any, attempts: int = RETRY_ATTEMPTS) -> Callable[..., Any]:
    """Call a ccxt method, retrying transient network/throttling errors (tenacity: exponential
    backoff with jitter and a cap); ccxt's limiter spaces requests, this covers the 429/5xx the
    venue still sends. The final error names the attempts, the time spent and the cause."""
    import ccxt
    import tenacity

    first = max(RETRY_FIRST_S, (ex.rateLimit or 0) / 1000)

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((ccxt.NetworkError, ccxt.ExchangeNotAvailable)),
            wait=tenacity.wait_random_exponential(multiplier=first, max=RETRY_CAP_S),
            stop=tenacity.stop_after_attempt(attempts),
            before_sleep=lambda state: _log_retry(ex.id, method, attempts, state),
            reraise=True,
        )
        try:
            return retrying(getattr(ex, method), *args, **kwargs)
        except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
            raise HistoryError(
                f"{ex.id} {method}: giving up after {attempts} attempts in "
                f"{time.monotonic() - began:.1f} s; last error: {type(exc).__name__}: {exc}"
            ) from exc
        except ccxt.BaseError as exc:
            raise HistoryError(f"{ex.id} {method}: {type(exc).__name__}: {exc}") from exc

    return call


def _market(ex: Any, symbol: str) -> dict[str, Any]:
    if not _SYMBOL_RE.match(symbol):
        raise HistoryError(f"symbol {symbol!r}: expected a ccxt symbol BASE/QUOTE (e.g. BTC/USDT)")
    if not ex.markets:
        _retrying(ex)("load_markets")
    market = (ex.markets or {}).get(symbol)
    if market is None:
        known = sorted(ex.markets or {})[:5]
        raise HistoryError(f"{ex.id}: symbol {symbol!r} is not listed (e.g. {known})")
    return market


# ------------------------------------------------------------------------------ fetching


def fetch_trades(
    ex: Any, symbol: str, start_ns: int, end_ns: int, limit: int = DEFAULT_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """ccxt trades with ``start_ns <= timestamp < end_ns``, oldest first, de-duplicated on id;
    returns (trades, requests made)."""
    call = _retrying(ex)
    start_ms = -(-start_ns // NS_PER_MS)
    end_ms = -(-end_ns // NS_PER_MS)  # first ms NOT in the range
    window = _TRADE_WINDOW_MS.get(ex.id)
    by_id = ex.id in _FROM_ID_PAGING
    kept: dict[str, dict[str, Any]] = {}
    cursor, from_id, requests, stuck = start_ms, None, 0, 0
    while cursor < end_ms:
        if from_id is not None:
            batch = call("fetch_trades", symbol, None, limit, {"fromId": from_id})
        else:
            batch = call("fetch_trades", symbol, cursor, limit)
        requests += 1
        if not batch:
            if from_id is None and window:
                cursor += window
                continue
            if stuck == 1:  # nothing after the 1 ms step (ccxt drops trades before since)
                stuck, cursor = 2, (cursor // 1000 + 1) * 1000
                continue
            break
        added = 0
        for t in batch:
            ts = t.get("timestamp")
            if type(ts) is not int:
                raise HistoryError(f"{ex.id} trade {t.get('id')!r}: timestamp {ts!r} is not ms")
            if start_ms <= ts < end_ms:
                key = _trade_key(t)
                if key not in kept:
                    kept[key] = t
                    added += 1
        last = batch[-1]
        last_ts = last["timestamp"]
        if last_ts >= end_ms:
            break
        last_id = last.get("id")
        if by_id and isinstance(last_id, str) and _INT64_ID.match(last_id):
            from_id = int(last_id) + 1
            continue
        if added:
            cursor, stuck = max(cursor, last_ts), 0  # ids seen twice at last_ts are dropped above
        elif len(batch) < limit:
            break  # a short page with nothing new: the venue has nothing after the cursor
        else:
            # a full page of trades already seen: more trades share the cursor's time than one
            # page holds. Step 1 ms, then (venues queried in whole seconds, e.g. Kraken through
            # ccxt) to the next second; the trades left behind cannot be reached by time.
            stuck += 1
            cursor = cursor + 1 if stuck == 1 else (cursor // 1000 + 1) * 1000
            log.warning(
                "%s %s: a full page of trades without progress; cursor moved to %d ms "
                "(trades beyond the page limit at one instant may be missing: raise the limit)",
                ex.id,
                symbol,
                cursor,
            )
    trades = sorted(kept.values(), key=lambda t: (t["timestamp"], _seq_of(_trade_key(t))))
    return trades, requests


def _trade_key(t: dict[str, Any]) -> str:
    trade_id = t.get("id")
    if trade_id is not None and trade_id != "":
        return str(trade_id)
    return f"\0{t.get('timestamp')}|{t.get('price')}|{t.get('amount')}|{t.get('side')}"


def _seq_of(key: str) -> int:
    if _INT64_ID.match(key):
        return int(key)
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def fetch_ohlcv(
    ex: Any,
    symbol: str,
    timeframe: str,
    start_ns: int,
    end_ns: int,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[list[Any]], int]:
    """ccxt candles whose open time is in ``[start_ns, end_ns)``, oldest first, one per open
    time; returns (candles, requests made)."""
    call = _retrying(ex)
    tf_ms = ex.parse_timeframe(timeframe) * 1000
    start_ms = -(-start_ns // NS_PER_MS)
    end_ms = -(-end_ns // NS_PER_MS)
    bars: dict[int, list[Any]] = {}
    cursor, requests = start_ms, 0
    while cursor < end_ms:
        batch = call("fetch_ohlcv", symbol, timeframe, cursor, limit)
        requests += 1
        if not batch:
            break
        for bar in batch:
            ts = bar[0]
            if type(ts) is not int or len(bar) < 6:
                raise HistoryError(f"{ex.id} candle {bar!r:.80}: expected [ms, o, h, l, c, v]")
            if start_ms <= ts < end_ms:
                bars[ts] = bar
        nxt = batch[-1][0] + tf_ms
        if nxt <= cursor:
            break
        cursor = nxt
    return [bars[k] for k in sorted(bars)], requests


# ------------------------------------------------------------------------------ tables


def _decimal(value: Any, what: str) -> Decimal:
    try:
        return Decimal(float_to_decimal(value, what))
    except NormalizeError as exc:
        raise HistoryError(str(exc)) from None


def trades_table(trades: Iterable[dict[str, Any]], venue_symbol: str) -> pa.Table:
    """ccxt trade structures -> rows of ``tables.TRADES`` (see the module doc for ts/seq)."""
    cols: dict[str, list[Any]] = {name: [] for name in TRADES.names}
    for t in trades:
        where = f"trade {t.get('id')!r}"
        key = _trade_key(t)
        side = t.get("side")
        if side not in ("buy", "sell", None):
            raise HistoryError(f"{where}: side {side!r} is not buy/sell")
        price = _decimal(t.get("price"), f"{where}.price")
        size = _decimal(t.get("amount"), f"{where}.amount")
        if price <= 0 or size <= 0:
            raise HistoryError(f"{where}: price and amount must be > 0")
        ts = t["timestamp"] * NS_PER_MS
        cols["ts_event"].append(ts)
        cols["ts_recv"].append(ts)
        cols["venue_symbol"].append(venue_symbol)
        cols["trade_id"].append("" if key.startswith("\0") else key)
        cols["price"].append(price)
        cols["size"].append(size)
        cols["side"].append(side or "unknown")
        cols["seq"].append(_seq_of(key))
    return pa.table(cols, schema=TRADES)


def ohlcv_table(candles: Iterable[list[Any]], timeframe: str) -> pa.Table:
    """ccxt candles ``[ms, open, high, low, close, volume]`` -> rows of ``tables.OHLCV``."""
    cols: dict[str, list[Any]] = {name: [] for name in OHLCV.names}
    for bar in candles:
        where = f"candle {bar[0]}"
        o, h, lo, c, v = (
            _decimal(bar[i], f"{where}.{n}")
            for i, n in enumerate(("open", "high", "low", "close", "volume"), 1)
        )
        if not lo <= min(o, c) <= max(o, c) <= h:
            raise HistoryError(f"{where}: open/close outside [low, high]: {bar!r:.100}")
        cols["ts"].append(bar[0] * NS_PER_MS)
        cols["interval"].append(timeframe)
        for name, value in zip(
            ("open", "high", "low", "close", "volume"), (o, h, lo, c, v), strict=True
        ):
            cols[name].append(value)
        cols["trade_count"].append(None)
    return pa.table(cols, schema=OHLCV)


# ------------------------------------------------------------------------------ lake writes


def _is_history(key: str, stem: str = HISTORY_STEM) -> bool:
    # the version tag follows the stem: a streaming source called "history" writes
    # part-history-segment_*, and the 1m candles part-history-1m-v*
    return key.rsplit("/", 1)[-1].startswith(f"part-{stem}-v")


class StreamedIds:
    """trade_ids of the streaming (non-history) trades parts of one exchange/symbol, per day:
    the table is listed once, a day's parts are read (trade_id column only) when first asked
    for, and days behind the scan are dropped again (a sliding window, not the whole range)."""

    def __init__(self, storage: Storage, layout: Layout, exchange: str, symbol: str) -> None:
        self.storage = storage
        self.keys: dict[str, list[str]] = {}
        for f in lake.Lake(storage, layout).files("trades", exchange, symbol):
            if not _is_history(f.key):
                self.keys.setdefault(f.date, []).append(f.key)
        self.cache: dict[date, frozenset[str]] = {}

    def day(self, day: date) -> frozenset[str]:
        if day not in self.cache:
            ids: set[str] = set()
            for key in self.keys.get(day.isoformat(), []):
                col = pq.read_table(io.BytesIO(self.storage.read_bytes(key)), columns=["trade_id"])
                ids.update(v for v in col.column(0).to_pylist() if v)
            self.cache[day] = frozenset(ids)
        return self.cache[day]

    def around(self, day: date) -> frozenset[str]:
        """Ids filed under the day before, the day, or the day after; forgets older days."""
        for old in [d for d in self.cache if d < day - timedelta(days=1)]:
            del self.cache[old]
        one = timedelta(days=1)
        return self.day(day - one) | self.day(day) | self.day(day + one)


def _merge(
    old: pa.Table | None, new: pa.Table, time_col: str, t0: int, t1: int, key_cols: list[str]
) -> pa.Table:
    """Old rows outside [t0, t1) plus the new rows, last wins on key_cols, sorted by key."""
    if old is not None and old.num_rows:
        ts = old.column(time_col)
        outside = pc.or_(pc.less(ts, t0), pc.greater_equal(ts, t1))
        new = pa.concat_tables([old.filter(outside), new])
    cols = [time_col, *key_cols]
    # sort_indices is stable: of two rows with one key, the newer (concatenated later) wins
    data = new.take(pc.sort_indices(new, [(c, "ascending") for c in cols]))
    if data.num_rows < 2:
        return data
    keys = list(zip(*(data.column(c).to_pylist() for c in cols), strict=True))
    last = {k: i for i, k in enumerate(keys)}
    return data.take(pa.array(sorted(last.values()), pa.int64()))


def _existing(
    storage: Storage, layout: Layout, table: str, exchange: str, symbol: str, day: date, stem: str
) -> list[lake.LakeFile]:
    """The committed history file(s) of one partition (one, unless a writer crashed)."""
    files = lake.Lake(storage, layout).files(table, exchange, symbol, day.isoformat())
    return [f for f in files if _is_history(f.key, stem)]


def _read_existing(storage: Storage, files: list[lake.LakeFile], table: str) -> pa.Table | None:
    if not files:
        return None
    return pa.concat_tables([lake.read_file(storage, f.key, table) for f in files])


def _write_or_delete(
    storage: Storage,
    layout: Layout,
    table: str,
    exchange: str,
    symbol: str,
    day: date,
    stem: str,
    data: pa.Table,
    row_group_size: int,
    report: HistoryReport,
) -> str | None:
    """Replace the partition's history file with `data` (validated first) in one commit; an
    empty result removes it. Returns the key written."""
    old = _existing(storage, layout, table, exchange, symbol, day, stem)
    if data.num_rows == 0:
        if old:
            lake.publish(storage, layout, table, [], stem, replace=old)
        return None
    schemas.validate(table, data, exchange, symbol, day.isoformat())
    staged = lake.publish(
        storage,
        layout,
        table,
        [(data, exchange, symbol, day.isoformat())],
        stem,
        replace=old,
        row_group_size=row_group_size,
    )
    report.files += [s.key for s in staged]
    report.bytes += sum(s.size for s in staged)
    return staged[0].key if staged else None


def write_trades(
    storage: Storage,
    layout: Layout,
    exchange: str,
    symbol: str,
    rows: pa.Table,
    start_ns: int,
    end_ns: int,
    row_group_size: int,
    report: HistoryReport,
) -> None:
    """Write the history trades part of every UTC day touched by [start_ns, end_ns)."""
    streamed_ids = StreamedIds(storage, layout, exchange, symbol)
    day = _day(start_ns)
    last = _day(end_ns - 1)
    ts = rows.column("ts_recv")
    while day <= last:
        d0 = (day - date(1970, 1, 1)).days * DAY_NS
        t0, t1 = max(start_ns, d0), min(end_ns, d0 + DAY_NS)
        fresh = rows.filter(pc.and_(pc.greater_equal(ts, t0), pc.less(ts, t1)))
        old = _read_existing(
            storage,
            _existing(storage, layout, "trades", exchange, symbol, day, HISTORY_STEM),
            "trades",
        )
        merged = _merge(old, fresh, "ts_recv", t0, t1, ["seq", "trade_id"])
        streamed = streamed_ids.around(day)
        if streamed:
            known = pa.array(list(streamed), pa.string())
            in_fresh = pc.is_in(fresh.column("trade_id"), value_set=known)
            report.trades_already_streamed += pc.sum(in_fresh).as_py() or 0
            dup = pc.is_in(merged.column("trade_id"), value_set=known)
            merged = merged.filter(pc.invert(dup))
        if old is not None or fresh.num_rows:
            written = _write_or_delete(
                storage, layout, "trades", exchange, symbol, day, HISTORY_STEM, merged,
                row_group_size, report,
            )  # fmt: skip
            if written:
                report.trade_parts.append(written)
        report.trades_written += (
            pc.sum(
                pc.and_(
                    pc.greater_equal(merged.column("ts_recv"), t0),
                    pc.less(merged.column("ts_recv"), t1),
                )
            ).as_py()
            or 0
        )
        day += timedelta(days=1)


def write_ohlcv(
    storage: Storage,
    layout: Layout,
    exchange: str,
    symbol: str,
    rows: pa.Table,
    timeframe: str,
    start_ns: int,
    end_ns: int,
    row_group_size: int,
    report: HistoryReport,
) -> None:
    stem = f"{HISTORY_STEM}-{timeframe}"
    day, last = _day(start_ns), _day(end_ns - 1)
    ts = rows.column("ts")
    while day <= last:
        d0 = (day - date(1970, 1, 1)).days * DAY_NS
        t0, t1 = max(start_ns, d0), min(end_ns, d0 + DAY_NS)
        fresh = rows.filter(pc.and_(pc.greater_equal(ts, t0), pc.less(ts, t1)))
        old = _read_existing(
            storage, _existing(storage, layout, "ohlcv", exchange, symbol, day, stem), "ohlcv"
        )
        if old is not None or fresh.num_rows:
            merged = _merge(old, fresh, "ts", t0, t1, ["interval"])
            _write_or_delete(
                storage, layout, "ohlcv", exchange, symbol, day, stem, merged, row_group_size,
                report,
            )  # fmt: skip
            report.bars_written += fresh.num_rows
        day += timedelta(days=1)


# ------------------------------------------------------------------------------ hot store


def hot_days_written(cfg: Config, report: HistoryReport, today: date | None = None) -> list[str]:
    """The written trades parts of days inside the hot window (the last ``hot_days``)."""
    from fluxforge.hot import window_start

    first = window_start(today or _today(cfg), cfg.lifecycle.hot_days)
    return [k for k in report.trade_parts if date.fromisoformat(_hive_date(k)) >= first]


def _today(cfg: Config) -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(cfg.lifecycle.timezone)).date()


def _hive_date(key: str) -> str:
    return key.split("/date=", 1)[1].split("/", 1)[0]


def load_hot(
    cfg: Config, dsn: str, report: HistoryReport, today: date | None = None
) -> dict[str, int]:
    """Load the written trades parts inside the hot window into the hot ``trades`` table with
    the hot store's own loader (idempotent on its natural keys; bars refreshed)."""
    from fluxforge.hot import HotStore, load_keys

    keys = hot_days_written(cfg, report, today)
    if not keys:
        return {}
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    hot.ensure_schema()
    storage = open_storage(cfg.storage.etl_output)
    loaded = load_keys(hot, storage, keys)
    report.hot_rows = {t: n for t, n in loaded.rows_inserted.items() if n}
    return report.hot_rows


# ------------------------------------------------------------------------------ entry points


def _check_args(
    exchange: str, symbol: str, start_ns: int, end_ns: int, what: str, timeframe: str
) -> None:
    if what not in WHATS:
        raise HistoryError(f"what={what!r}: allowed {', '.join(WHATS)}")
    if not _TIMEFRAME_RE.match(timeframe):
        raise HistoryError(f"timeframe={timeframe!r}: expected e.g. 1m, 5m, 1h, 1d")
    if end_ns <= start_ns:
        raise HistoryError(f"end ({_iso(end_ns)}) must be after start ({_iso(start_ns)})")
    if not _SYMBOL_RE.match(symbol):
        raise HistoryError(f"symbol {symbol!r}: expected a ccxt symbol BASE/QUOTE (e.g. BTC/USDT)")
    if not is_ccxt_exchange(exchange):
        raise HistoryError(
            f"exchange {exchange!r}: not a ccxt exchange id (e.g. binance, coinbase, kraken)"
        )


def backfill(
    cfg: Config,
    exchange: str,
    symbol: str,
    start: Any,
    end: Any,
    what: What = "both",
    timeframe: str = "1m",
    *,
    ccxt_options: dict[str, Any] | None = None,
    markets: list[dict[str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    storage: Storage | None = None,
    hot_dsn: str | None = None,
    today: date | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> HistoryReport:
    """Fetch and write the history of one (exchange, symbol, [start, end)), one UTC day at a
    time (``progress`` is called after each); with ``resume``, days a previous run of the same
    (exchange, symbol, what, timeframe) finished are skipped.

    ``start``/``end``: ISO-8601 (naive = UTC) or int ns. ``hot_dsn``: the hot store; the
    written trades parts of days inside the hot window are loaded into it (``load_hot``)."""
    from fluxforge.query import QueryError, parse_time

    try:
        start_ns, end_ns = parse_time(start, "start"), parse_time(end, "end")
    except QueryError as exc:
        raise HistoryError(str(exc)) from None
    _check_args(exchange, symbol, start_ns, end_ns, what, timeframe)
    if limit < 1:
        raise HistoryError(f"limit={limit}: must be >= 1")
    began = time.monotonic()
    ex = open_exchange(exchange, ccxt_options, markets)
    market = _market(ex, symbol)
    if what in ("ohlcv", "both") and timeframe not in (ex.timeframes or {}):
        raise HistoryError(
            f"{exchange}: timeframe {timeframe!r} not offered; "
            f"allowed {sorted(ex.timeframes or {})}"
        )
    try:
        norm = venue_symbol_to_symbol(symbol)
    except NormalizeError as exc:
        raise HistoryError(str(exc)) from None
    report = HistoryReport(exchange, norm, market["id"], start_ns, end_ns, what, timeframe)
    layer = cfg.storage.etl_output
    storage = storage or open_storage(layer)
    layout = Layout.of(layer)
    rgs = cfg.refinery.row_group_size
    # one UTC day at a time: memory holds one day of rows, and every finished day is recorded
    # (state/history/...) so `resume` skips it after an interruption
    done_key = layout.state("history", exchange, norm, f"{what}-{timeframe}.json")
    done = set(_done_days(storage, done_key))
    slices = day_slices(start_ns, end_ns)
    for t0, t1 in slices:
        tag = f"{_iso(t0)}/{_iso(t1)}"
        if resume and tag in done:
            report.days_skipped += 1
            if progress:
                progress(f"{_day(t0)} already done")
            continue
        trades_before, bars_before = report.trades_written, report.bars_written
        if what in ("ohlcv", "both"):
            candles, n = fetch_ohlcv(ex, symbol, timeframe, t0, t1, limit)
            report.requests += n
            report.bars_fetched += len(candles)
            write_ohlcv(
                storage, layout, exchange, norm, ohlcv_table(candles, timeframe), timeframe,
                t0, t1, rgs, report,
            )  # fmt: skip
        if what in ("trades", "both"):
            trades, n = fetch_trades(ex, symbol, t0, t1, limit)
            report.requests += n
            report.trades_fetched += len(trades)
            write_trades(
                storage, layout, exchange, norm, trades_table(trades, market["id"]),
                t0, t1, rgs, report,
            )  # fmt: skip
        done.add(tag)
        storage.write_bytes(done_key, orjson.dumps(sorted(done)))
        report.days += 1
        if progress:
            progress(
                f"{_day(t0)}: {report.trades_written - trades_before} trades, "
                f"{report.bars_written - bars_before} bars"
            )
    if hot_dsn is not None:
        load_hot(cfg, hot_dsn, report, today=today)
    report.seconds = time.monotonic() - began
    log.info(
        "history %s %s: %d trades, %d bars written, %d requests",
        exchange, norm, report.trades_written, report.bars_written, report.requests,
    )  # fmt: skip
    return report


def backfill_and_load(cfg: Config, *args: Any, hot: bool = True, **kwargs: Any) -> HistoryReport:
    """``backfill`` and, with ``hot``, load the hot-window days into the configured hot store
    (``hot_store.dsn``, else the embedded server, started only when there is a day to load)."""
    report = backfill(cfg, *args, **kwargs)
    if hot and hot_days_written(cfg, report, kwargs.get("today")):
        import psycopg

        from fluxforge.hot import HotStoreError
        from fluxforge.pgserver import PostgresServerError, hot_dsn

        try:
            with hot_dsn(cfg) as dsn:
                load_hot(cfg, dsn, report, kwargs.get("today"))
        except (PostgresServerError, HotStoreError, psycopg.Error) as exc:
            # the lake parts are written and stay: say so, and how to finish the job
            raise HistoryError(
                f"lake written ({len(report.files)} files) but the hot store load failed: "
                f"{exc}; run `fluxforge hot load` once it is reachable, or use --no-hot"
            ) from exc
    return report
