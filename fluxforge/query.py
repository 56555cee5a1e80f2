"""The unified reader (docs/architecture.md, "Tiering and the reader"): "BTC book at 10:00:00",
"trades for March", on any tier.

``book_at`` = the nearest injected snapshot at or before T in T's daily partition, then the
deltas after it (by daemon ``seq``) up to T. Deltas carry absolute level sizes, so the state of
a level at T is simply its last delta: the rebuild is a vectorized "last row per (side, price)"
instead of a Python replay loop. Snapshots hold the top N levels only, so a side is exact down
to the snapshot's worst price; ``BookAt.exact_depth`` says how many levels are guaranteed.

Range queries are routed per UTC day: days held by the PostgreSQL hot store come from there,
the others from the Parquet lake, so a range straddling both has no duplicate and no hole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fluxforge import bar_rule, lake
from fluxforge.config import Config
from fluxforge.lake import Lake, LakeFile, file_of_key, parse_as_of
from fluxforge.storage import Layout, Storage, open_storage
from fluxforge.tables import DECIMAL, SCHEMAS, from_lake, lake_filters

TimeKind = Literal["recv", "event"]
_INT_RE = re.compile(r"^-?\d+$")


class QueryError(ValueError):
    """A query argument is invalid; the message names it."""


def parse_time(value: str | int | datetime, name: str = "time") -> int:
    """ISO-8601 (naive = UTC) or integer ns since the epoch -> ns."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if _INT_RE.match(text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{name}={value!r}: expected ISO-8601 (2024-03-01T10:00:00Z) or integer ns"
        ) from None
    frac_ns = 0
    m = re.search(r"\.(\d+)", text)
    if m:
        frac_ns = int((m.group(1) + "000000000")[:9])
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    whole = int(dt.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + frac_ns


def _prune(files: list[LakeFile], filters: list[tuple[str, str, Any]]) -> list[LakeFile]:
    """Files whose log statistics may satisfy every range filter (file skipping)."""
    out = []
    for f in files:
        keep = True
        for col, op, value in filters:
            if not isinstance(value, int):
                continue
            lo = value + (op == ">") if op in (">", ">=", "=", "==") else None
            hi = value - (op == "<") if op in ("<", "<=", "=", "==") else None
            if not f.overlaps(col, lo, hi):
                keep = False
                break
        if keep:
            out.append(f)
    return out


def ns_to_date(ns: int) -> date:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).date()


@dataclass
class BookAt:
    exchange: str
    symbol: str
    ts: int
    bids: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    asks: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    snapshot_ts: int | None = None
    book_epoch: int | None = None
    deltas_applied: int = 0
    exact_depth: int = 0
    # False when the book's epoch ended (gap ledger: chain break, checksum mismatch, reconnect,
    # sequence gap) after its last snapshot and before `ts`: no book is known until the next
    # exchange snapshot, so bids/asks are empty and `gap` is that ledger row
    valid: bool = True
    gap: dict[str, Any] | None = None
    # receive time of the last message reflected in the book (snapshot or delta)
    last_update_ts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, times as int ns (``fluxforge.render.book_document`` for people)."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "ts": self.ts,
            "valid": self.valid,
            "snapshot_ts": self.snapshot_ts,
            "last_update_ts": self.last_update_ts,
            "book_epoch": self.book_epoch,
            "deltas_applied": self.deltas_applied,
            "exact_depth": self.exact_depth,
            "gap": self.gap,
            "bids": [[_plain(p), _plain(s)] for p, s in self.bids],
            "asks": [[_plain(p), _plain(s)] for p, s in self.asks],
        }


def _plain(value: Decimal) -> str:
    """A decimal without the lake's scale padding: 64999.980000000000 -> 64999.98."""
    return format(value.normalize(), "f")


class Reader:
    """Reads the lake (and the hot store when configured) of one FluxForge config."""

    def __init__(
        self,
        cfg: Config,
        storage: Storage | None = None,
        hot: Any = None,
        as_of: int | str | None = None,
    ) -> None:
        """`as_of`: read the lake as of a table version or a time (Delta time travel; the hot
        store is not consulted then, since it has no history)."""
        self.cfg = cfg
        self.storage = storage or open_storage(cfg.storage.etl_output)
        self.layout = Layout.of(cfg.storage.etl_output)
        self.lake = Lake(self.storage, self.layout)
        self.as_of = as_of
        if as_of is not None:
            try:
                parse_as_of(as_of)  # a bad value fails here, before any read
            except ValueError as exc:
                raise QueryError(str(exc)) from None
            hot = False
        if hot is None:
            from fluxforge.pgserver import running_hot_dsn

            dsn = running_hot_dsn(cfg)
            if dsn:
                from fluxforge.hot import HotStore

                hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
        self.hot = hot or None
        self._fs: Any = None

    # -- lake access -------------------------------------------------------------------------
    def _files(self, table: str, exchange: str, symbol: str, day: date) -> list[LakeFile]:
        """One partition's files, from the table's log (with their time statistics)."""
        return self.lake.files(table, exchange, symbol, day.isoformat(), as_of=self.as_of)

    def _read(
        self,
        table: str,
        exchange: str,
        symbol: str,
        day: date,
        filters: list[tuple[str, str, Any]] | None = None,
        columns: list[str] | None = None,
        keys: list[LakeFile] | None = None,
    ) -> pa.Table:
        files = self._files(table, exchange, symbol, day) if keys is None else keys
        files = _prune(files, filters or [])
        if not files:
            empty = SCHEMAS[table].empty_table()
            return empty if columns is None else empty.select(columns)
        if self._fs is None:
            self._fs = self.storage.arrow_filesystem()
        # the marts' parts (bars_*) keep int64 ns times; the lake tables store timestamps
        schema = SCHEMAS.get(table)
        stored = lake_filters(filters or [], schema) if schema else filters
        parts = [
            pq.read_table(
                self.storage.arrow_path(f.key),
                filesystem=self._fs,
                filters=stored or None,
                columns=columns,
            )
            for f in files
        ]
        data = pa.concat_tables(parts, promote_options="permissive")
        return from_lake(data, schema) if schema else data

    def _latest(
        self,
        files: list[LakeFile],
        column: str,
        read: Any,
    ) -> Any:
        """Walk `files` from the newest `column` maximum back; `read(batch)` returns (order key
        whose first item is a `column` value, found value), or None. Stops once no older file
        can beat the best found: files may overlap in time (several sources, compacted days)."""
        order = sorted(files, key=lambda f: f.bounds(column)[1] or 0, reverse=True)
        best = None
        for f in order:
            hi = f.bounds(column)[1]
            if best is not None and hi is not None and hi < best[0][0]:
                break
            found = read([f])
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return None if best is None else best[1]

    # -- book_at -----------------------------------------------------------------------------
    def book_at(
        self,
        exchange: str,
        symbol: str,
        ts: str | int | datetime,
        depth: int = 10,
        time: TimeKind = "recv",
    ) -> BookAt:
        """The book at `ts`: by receive time (what had arrived by then), or with
        ``time="event"`` as of the venue's clock: the book after the last message, in receive
        order, whose event time is <= `ts` (messages whose event times run backwards are taken
        in the order they arrived)."""
        if depth < 1:
            raise QueryError(f"depth={depth}: must be >= 1")
        if time not in ("recv", "event"):
            raise QueryError(f"time={time!r}: allowed recv, event")
        t = parse_time(ts, "at")
        if time == "recv":
            return self._book_at(exchange, symbol, t, depth)
        recv = self._recv_of_event(exchange, symbol, t)
        if recv is None:
            return BookAt(exchange, symbol, t)
        out = self._book_at(exchange, symbol, recv, depth)
        out.ts = t
        return out

    def _recv_of_event(self, exchange: str, symbol: str, t: int) -> int | None:
        """Receive time of the last book message with event time <= t. Parts are named by
        the receive hour of their segment: walk back from the hour after t's (a message can
        arrive after the hour of its event) until a part holds such a message."""
        day = ns_to_date(t)
        # a message can arrive after the day of its event: look at the next day's files too
        files = [
            f
            for d in (day, day + timedelta(days=1))
            for f in self._files("book_deltas", exchange, symbol, d)
            if f.overlaps("ts_event", None, t)
        ]

        def read(batch: list[LakeFile]) -> tuple[tuple[int], int] | None:
            rows = self._read(
                "book_deltas",
                exchange,
                symbol,
                day,
                filters=[("ts_event", "<=", t)],
                columns=["ts_recv"],
                keys=batch,
            )
            if not rows.num_rows:
                return None
            best = int(pc.max(rows["ts_recv"]).as_py())
            return (best,), best

        return self._latest(files, "ts_recv", read)

    def _book_at(self, exchange: str, symbol: str, t: int, depth: int) -> BookAt:
        day = ns_to_date(t)
        out = BookAt(exchange, symbol, t)
        # walk back through the day's snapshot files (newest first, by the log's ts_recv
        # statistics) until one has a snapshot at or before T
        snap_files = [
            f
            for f in self._files("book_snapshots", exchange, symbol, day)
            if f.overlaps("ts_recv", None, t)
        ]

        def read(batch: list[LakeFile]) -> tuple[tuple[int, int], dict[str, Any]] | None:
            snaps = self._read(
                "book_snapshots", exchange, symbol, day, filters=[("ts_recv", "<=", t)], keys=batch
            )
            if not snaps.num_rows:
                return None
            order = pc.sort_indices(snaps, [("ts_recv", "ascending"), ("seq", "ascending")])
            row = snaps.take(order.slice(snaps.num_rows - 1, 1)).to_pylist()[0]
            return (row["ts_recv"], row["seq"]), row

        snap = self._latest(snap_files, "ts_recv", read)
        if snap is None:
            return out
        out.snapshot_ts = out.last_update_ts = snap["ts_recv"]
        out.book_epoch = snap["book_epoch"]
        ended = self._read(
            "gap_ledger",
            exchange,
            symbol,
            day,
            filters=[("ts_to", ">", snap["ts_recv"]), ("ts_to", "<=", t)],
        )
        if ended.num_rows:
            first = ended.take(pc.sort_indices(ended, [("ts_to", "ascending")])).slice(0, 1)
            row = first.to_pylist()[0]
            out.valid = False
            out.gap = {k: row.get(k) for k in ("cause", "ts_from", "ts_to", "detail", "book_epoch")}
            return out
        delta_keys = [
            f
            for f in self._files("book_deltas", exchange, symbol, day)
            if f.overlaps("ts_recv", snap["ts_recv"], t)
        ]
        deltas = self._read(
            "book_deltas",
            exchange,
            symbol,
            day,
            filters=[("ts_recv", ">=", snap["ts_recv"]), ("ts_recv", "<=", t)],
            columns=["ts_recv", "seq", "side", "price", "size", "is_snapshot"],
            keys=delta_keys,
        )
        deltas = deltas.filter(pc.greater(deltas["seq"], snap["seq"]))
        deltas = deltas.take(pc.sort_indices(deltas, [("seq", "ascending")]))
        out.deltas_applied = deltas.num_rows
        if deltas.num_rows:
            out.last_update_ts = pc.max(deltas["ts_recv"]).as_py()
        levels: dict[str, dict[Decimal, Decimal]] = {
            "bid": dict(zip(snap["bid_px"], snap["bid_sz"], strict=True)),
            "ask": dict(zip(snap["ask_px"], snap["ask_sz"], strict=True)),
        }
        bounds = {
            "bid": min(snap["bid_px"]) if len(snap["bid_px"]) >= snap["depth"] else None,
            "ask": max(snap["ask_px"]) if len(snap["ask_px"]) >= snap["depth"] else None,
        }
        if deltas.num_rows:
            snap_flags = deltas["is_snapshot"].to_pylist()
            seqs = deltas["seq"].to_pylist()
            # an exchange snapshot replaces the book: start from its first level
            start = 0
            for i in range(len(seqs) - 1, -1, -1):
                if snap_flags[i] and (i == 0 or not snap_flags[i - 1] or seqs[i - 1] != seqs[i]):
                    start = i
                    break
            if snap_flags[start]:
                levels = {"bid": {}, "ask": {}}
                bounds = {"bid": None, "ask": None}
            for side, price, size in zip(
                deltas["side"].to_pylist()[start:],
                deltas["price"].to_pylist()[start:],
                deltas["size"].to_pylist()[start:],
                strict=True,
            ):
                levels[side][price] = size
        bids = sorted(((p, s) for p, s in levels["bid"].items() if s), reverse=True)
        asks = sorted((p, s) for p, s in levels["ask"].items() if s)
        if bounds["bid"] is not None:
            bids = [lv for lv in bids if lv[0] >= bounds["bid"]]
        if bounds["ask"] is not None:
            asks = [lv for lv in asks if lv[0] <= bounds["ask"]]
        out.bids, out.asks = bids[:depth], asks[:depth]
        out.exact_depth = min(len(bids), len(asks), depth)
        return out

    # -- ranges ------------------------------------------------------------------------------
    def _range(
        self, table: str, exchange: str, symbol: str, start: Any, end: Any, time: TimeKind
    ) -> pa.Table:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        if t1 < t0:
            raise QueryError(f"end ({end}) is before start ({start})")
        col = "ts_recv" if time == "recv" else "ts_event"
        hot_days = set(self.hot.days(table)) if self.hot is not None else set()
        parts = []
        day = ns_to_date(t0)
        # event time may precede receive time slightly: look one day back for event queries
        if time == "event":
            day -= timedelta(days=1)
        while day <= ns_to_date(t1):
            if day in hot_days:
                tbl = self.hot.read(table, exchange, symbol, day, col, t0, t1)
                # the hot store may lack rows the lake has (a segment refined but not loaded
                # yet, a late segment, a clock step back, a second source of the venue): the
                # day's lake rows are merged by identity, not after a time cutoff
                lake_rows = self._read(
                    table, exchange, symbol, day, filters=[(col, ">=", t0), (col, "<=", t1)]
                )
                tbl = merge_by_identity(tbl, lake_rows)
            else:
                tbl = self._read(
                    table, exchange, symbol, day, filters=[(col, ">=", t0), (col, "<=", t1)]
                )
            if tbl.num_rows:
                parts.append(tbl)
            day += timedelta(days=1)
        if not parts:
            return SCHEMAS[table].empty_table()
        merged = pa.concat_tables(parts, promote_options="permissive")
        return merged.take(pc.sort_indices(merged, [(col, "ascending"), ("seq", "ascending")]))

    def trades(
        self, exchange: str, symbol: str, start: Any, end: Any, time: TimeKind = "recv"
    ) -> pa.Table:
        return self._range("trades", exchange, symbol, start, end, time)

    def quotes(
        self, exchange: str, symbol: str, start: Any, end: Any, time: TimeKind = "recv"
    ) -> pa.Table:
        return self._range("quotes", exchange, symbol, start, end, time)

    def bars(
        self, exchange: str, symbol: str, start: Any, end: Any, interval: str = "1m"
    ) -> pa.Table:
        """OHLCV bars whose start lies in [start, end]: hot days from PostgreSQL, the others
        from the SQL models' Parquet (``fluxforge sql run``, dbt). A hot day the hot store has not
        fully loaded yet is completed from the lake's later trades (``_complete_hot_bars``). A
        bar present in two days (a bucket near midnight) is taken once, from the earlier day.
        Bar starts without a trade-derived bar take the exchange's own candle of the interval
        from the ``ohlcv`` table (``fluxforge history``), when it has one; the ``source``
        column says which: ``trades`` or ``exchange``."""
        if interval not in BAR_INTERVALS:
            raise QueryError(f"interval={interval!r}: allowed {', '.join(BAR_INTERVALS)}")
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        if t1 < t0:
            raise QueryError(f"end ({end}) is before start ({start})")
        table = f"bars_{interval}"
        hot_days: set[date] = set()
        if self.hot is not None and interval in self.hot.intervals:
            hot_days = set(self.hot.days(table))
        parts: list[pa.Table] = []
        day = ns_to_date(t0)
        while day <= ns_to_date(t1):
            if day in hot_days:
                tbl = _bars_from_hot(self.hot.read(table, exchange, symbol, day, "ts", t0, t1))
                tbl = self._complete_hot_bars(tbl, exchange, symbol, day, interval, t0, t1)
            else:
                # the marts' Parquet published by dbt (dbt_like_sql/macros/publish_dates.sql)
                part = self.layout.model_part(
                    table, {"date": str(day), "exchange": exchange, "symbol": symbol}
                )
                keys = self.storage.list(part.rsplit("/", 1)[0], "*.parquet")
                if keys:
                    tbl = _bars_from_lake(
                        self._read(
                            table, exchange, symbol, day, keys=[file_of_key(k) for k in keys]
                        )
                    )
                else:
                    # no SQL-model part for the day (`fluxforge sql run` not run yet): the
                    # same bars from the lake's trades, by the bar rule
                    tbl = self._bars_from_lake_trades(exchange, symbol, day, interval)
                mask = pc.and_(pc.greater_equal(tbl["ts"], t0), pc.less_equal(tbl["ts"], t1))
                tbl = tbl.filter(mask)
            if tbl.num_rows:
                parts.append(tbl)
            day += timedelta(days=1)
        if not parts:
            return self._with_exchange_bars(BARS.empty_table(), exchange, symbol, interval, t0, t1)
        merged = pa.concat_tables(parts)
        # the sort is stable and parts are in day order: keep the first row of each bar start
        merged = merged.take(pc.sort_indices(merged, [("ts", "ascending")]))
        ts = merged["ts"].to_numpy()
        keep = np.ones(len(ts), dtype=bool)
        keep[1:] = ts[1:] != ts[:-1]
        merged = merged.filter(pa.array(keep))
        return self._with_exchange_bars(merged, exchange, symbol, interval, t0, t1)

    def _with_exchange_bars(
        self, bars: pa.Table, exchange: str, symbol: str, interval: str, t0: int, t1: int
    ) -> pa.Table:
        """Trade-derived `bars` (``source = trades``) plus, at the bar starts in [t0, t1] they
        do not have, the exchange's candles of `interval` from the ``ohlcv`` table
        (``source = exchange``; no VWAP, trade count when the venue gives one)."""
        candles = []
        day = ns_to_date(t0)
        while day <= ns_to_date(t1):
            rows = lake.read_table(self.storage, "ohlcv", exchange, symbol, str(day), self.layout)
            if rows.num_rows:
                candles.append(rows)
            day += timedelta(days=1)
        out = bars.append_column("source", pa.repeat("trades", bars.num_rows))
        if not candles:
            return out
        rows = pa.concat_tables(candles)
        traded = pc.is_in(rows["ts"], value_set=bars["ts"].combine_chunks())
        wanted = pc.and_(
            pc.and_(pc.equal(rows["interval"], interval), pc.invert(traded)),
            pc.and_(pc.greater_equal(rows["ts"], t0), pc.less_equal(rows["ts"], t1)),
        )
        rows = rows.filter(wanted)
        if not rows.num_rows:
            return out
        exchange_bars = pa.table(
            {
                "ts": rows["ts"],
                **{c: rows[c] for c in ("open", "high", "low", "close", "volume")},
                "vwap": pa.nulls(rows.num_rows, pa.float64()),
                "trade_count": rows["trade_count"],
            }
        ).cast(BARS)
        exchange_bars = exchange_bars.append_column("source", pa.repeat("exchange", rows.num_rows))
        merged = pa.concat_tables([out, exchange_bars])
        return merged.take(pc.sort_indices(merged, [("ts", "ascending")]))

    def _bars_from_lake_trades(
        self, exchange: str, symbol: str, day: date, interval: str
    ) -> pa.Table:
        """Bars of one day's lake trades by the bar rule (``bars_from_trades``)."""
        from fluxforge.hot import interval_ns

        trades = self._read("trades", exchange, symbol, day, columns=_BAR_INPUT)
        return bars_from_trades(trades, interval_ns(interval))

    def _complete_hot_bars(
        self,
        bars: pa.Table,
        exchange: str,
        symbol: str,
        day: date,
        interval: str,
        t0: int,
        t1: int,
    ) -> pa.Table:
        """A hot day's bars completed from the lake when the hot store trails it.

        Segments reach the lake before the hot tables, so the lake may hold trades received
        after the hot store's last one (the tail). Every bar from the earliest bucket the tail
        touches (b0) on is recomputed from hot trades + tail trades; the hot trades are exactly
        those received at or before the hot store's last ``ts_recv``, so none is counted twice.
        Bars are computed as the hot store computes them (``HotStore._refresh_bars``); VWAP is
        summed in double here (the hot store rounds an exact quotient to the lake's 12
        decimals), which the float64 ``vwap`` column cannot tell apart beyond the last bits."""
        from fluxforge.hot import interval_ns

        last = self.hot.last_recv("trades", exchange, symbol, day)
        keys = self._files("trades", exchange, symbol, day)
        filters: list[tuple[str, str, Any]] = []
        if last is not None:
            # files whose receive times all precede the hot store's last hold no tail
            keys = [f for f in keys if f.overlaps("ts_recv", last + 1, None)]
            filters = [("ts_recv", ">", last)]
        tail = _bar_time(self._read("trades", exchange, symbol, day, filters, _BAR_INPUT, keys))
        if not tail.num_rows:
            return bars
        iv = interval_ns(interval)
        b0 = pc.min(_bucket(tail["ts_event"], iv)).as_py()
        # only bars starting in [t0, t1] are returned: recompute [lo, hi] of those from b0 on
        lo = max(b0, -(-t0 // iv) * iv)
        hi = t1 - t1 % iv
        if lo > hi:
            return bars
        end = hi + iv - 1
        # (a hot trade without event time, bucketed by ts_recv, is not re-read here: no venue
        # FluxForge normalizes sends trades without one)
        hot = _bar_time(self.hot.read("trades", exchange, symbol, day, "ts_event", lo, end))
        in_range = pc.and_(
            pc.greater_equal(tail["ts_event"], lo), pc.less_equal(tail["ts_event"], end)
        )
        trades = pa.concat_tables([hot.select(_BAR_INPUT), tail.filter(in_range)])
        kept = bars.filter(pc.less(bars["ts"], lo))
        return pa.concat_tables([kept, bars_from_trades(trades, iv)])


BAR_INTERVALS = ("1m", "5m", "1h", "1d")
BARS = pa.schema(
    [
        ("ts", pa.int64()),  # bar start, ns (event time, UTC-aligned)
        ("open", DECIMAL),
        ("high", DECIMAL),
        ("low", DECIMAL),
        ("close", DECIMAL),
        ("volume", DECIMAL),
        ("vwap", pa.float64()),
        ("trade_count", pa.int64()),
    ]
)


def _bars_from_lake(tbl: pa.Table) -> pa.Table:
    return pa.table(
        {
            "ts": tbl["bar_start_ns"],
            **{c: tbl[c] for c in ("open", "high", "low", "close", "volume")},
            "vwap": tbl["vwap"],
            "trade_count": tbl["trade_count"],
        }
    ).cast(BARS)


_BAR_INPUT = ["ts_event", "ts_recv", "seq", "price", "size", "trade_id"]


def _bar_time(trades: pa.Table) -> pa.Table:
    """Trades with ``ts_event`` replaced by the bars' time (``bar_rule.bar_time``)."""
    idx = trades.schema.get_field_index("ts_event")
    return trades.set_column(idx, "ts_event", bar_rule.bar_time(trades))


def _first_receipts(trades: pa.Table) -> pa.Table:
    """The trades of one day with each venue trade id kept once, at its first receipt in the bar
    rule's ``FIRST_RECEIPT`` order (a reconnect can repeat a trade); rows without an id are all
    kept."""
    trades = trades.take(bar_rule.sort_indices(trades, bar_rule.FIRST_RECEIPT))
    ids = trades["trade_id"]
    rows = pa.table({"trade_id": ids, "i": pa.array(np.arange(trades.num_rows, dtype=np.int64))})
    named = rows.filter(pc.and_(pc.is_valid(ids), pc.not_equal(ids, "")))
    first = named.group_by("trade_id", use_threads=False).aggregate([("i", "min")])["i_min"]
    drop = named["i"].filter(pc.invert(pc.is_in(named["i"], first)))
    if not len(drop):
        return trades
    mask = np.ones(trades.num_rows, dtype=bool)
    mask[drop.to_numpy()] = False
    return trades.filter(pa.array(mask))


def _bucket(ts_event: pa.ChunkedArray | pa.Array, iv: int) -> pa.ChunkedArray | pa.Array:
    """Bar start = ``ts_event - ts_event % iv`` (integer division truncates, as in SQL)."""
    return pc.multiply(pc.divide(ts_event, iv), iv)


def bars_from_trades(trades: pa.Table, iv: int) -> pa.Table:
    """OHLCV bars of `iv` ns from the trades of one receive day (lake columns ts_event, ts_recv,
    seq, price, size, trade_id) by the bar rule (``fluxforge.bar_rule``): a trade id counts
    once, bar time is ``ts_event`` else ``ts_recv``, open/close = first/last in ``TRADE_ORDER``,
    high/low, volume = sum(size) and trade count exact, vwap = sum(price * size) / volume in
    double. The reader completes a hot day with it; the hot store and the SQL models compute
    the same rows from the same trades."""
    if not trades.num_rows:
        return BARS.empty_table()
    trades = _first_receipts(_bar_time(trades))
    # bar time leads TRADE_ORDER, so the rows come grouped by bucket, in the rule's order
    order = bar_rule.sort_indices(trades, bar_rule.TRADE_ORDER)
    keyed = pa.table({"bucket": _bucket(trades["ts_event"], iv)})
    price = trades["price"].take(order)
    size = trades["size"].take(order)
    notional = pc.multiply(pc.cast(price, pa.float64()), pc.cast(size, pa.float64()))
    rows = pa.table(
        {
            "bucket": keyed["bucket"].take(order),
            "i": pa.array(np.arange(trades.num_rows, dtype=np.int64)),
            "price": price,
            "size": size,
            "notional": notional,
        }
    )
    g = rows.group_by("bucket", use_threads=False).aggregate(
        [
            ("i", "min"),
            ("i", "max"),
            ("price", "max"),
            ("price", "min"),
            ("size", "sum"),
            ("notional", "sum"),
            ("i", "count"),
        ]
    )
    g = g.take(pc.sort_indices(g, [("bucket", "ascending")]))
    volume = pc.cast(g["size_sum"], DECIMAL)
    vol_f = pc.cast(volume, pa.float64())
    vwap = pc.if_else(
        pc.equal(vol_f, 0.0), pa.scalar(None, pa.float64()), pc.divide(g["notional_sum"], vol_f)
    )
    return pa.table(
        {
            "ts": g["bucket"],
            "open": price.take(g["i_min"]),
            "high": g["price_max"],
            "low": g["price_min"],
            "close": price.take(g["i_max"]),
            "volume": volume,
            "vwap": vwap,
            "trade_count": g["i_count"],
        }
    ).cast(BARS)


def _bars_from_hot(tbl: pa.Table) -> pa.Table:
    return pa.table(
        {
            "ts": tbl["ts"],
            **{c: tbl[c] for c in ("open", "high", "low", "close", "volume")},
            "vwap": pc.cast(tbl["vwap"], pa.float64()),
            "trade_count": tbl["trades"],
        }
    ).cast(BARS)


# a row's identity across the hot store and the lake: the raw line it came from (its receive
# time and the daemon's seq); the rows of one line are loaded into the hot store together
ROW_IDENTITY = ("ts_recv", "seq")


def merge_by_identity(hot: pa.Table, lake_rows: pa.Table) -> pa.Table:
    """Hot rows plus the lake rows whose raw line (``ROW_IDENTITY``) the hot store does not
    hold: nothing hidden, nothing doubled, whatever the times of the missing rows."""
    if not lake_rows.num_rows:
        return hot
    if not hot.num_rows:
        return lake_rows
    keys = hot.select(list(ROW_IDENTITY)).group_by(list(ROW_IDENTITY)).aggregate([])
    missing = lake_rows.join(keys, list(ROW_IDENTITY), join_type="left anti")
    if not missing.num_rows:
        return hot
    return pa.concat_tables([hot, missing.select(hot.column_names)], promote_options="permissive")


def as_format(table: pa.Table, fmt: Literal["arrow", "polars", "pandas"] = "arrow") -> Any:
    """Results as Arrow (default), Polars or pandas."""
    if fmt == "arrow":
        return table
    if fmt == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if fmt == "pandas":
        return table.to_pandas()
    raise QueryError(f"format={fmt!r}: allowed arrow, polars, pandas")


def write_result(table: pa.Table, fmt: str, output: str | None = None) -> None:
    """Write a query result to stdout (or `output`) as table, csv, json lines or parquet."""
    import sys

    import polars as pl

    df = pl.from_arrow(table)
    if fmt == "parquet":
        df.write_parquet(output or sys.stdout.buffer)
    elif fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(df.write_ndjson())
    elif fmt == "table":
        with pl.Config(tbl_rows=50, tbl_cols=-1):
            sys.stdout.write(f"{df}\n")
    else:
        raise QueryError(f"format={fmt!r}: allowed table, csv, json, parquet")
