"""Feed statistics: how far each feed can be trusted, per exchange · symbol · channel · UTC hour.

Written by the refinery as the ``feed_stats`` lake table (one row per segment, exchange,
symbol, channel and hour: ``segment_parts``) and merged per hour on read (``hourly``) and in
the SQL mart ``feed_stats_hourly``, whose merge macros this module generates (``dbt_macros``);
the rules are documented in docs/data-guide.md ("feed_stats: how far each feed can be trusted").

Definitions (one place for all of them):

* a **message** is one raw line (one daemon ``seq``) that produced rows in the channel's table
  (``trades`` -> ``trades``, ``quotes`` -> ``quotes``, ``book_deltas`` -> ``book``); its event
  time is the latest ``ts_event`` of its rows and its receive time the latest ``ts_recv``;
* **latency** = receive time - event time of a message, in ns, over the messages that carry a
  venue time. Normalizers write ``ts_event = ts_recv`` when the venue sends no time (Coinbase
  snapshots, Kraken tickers, ...), so messages with equal times are counted in ``messages`` but
  not in the latency statistics (``latency_messages``);
* quantiles p50/p90/p99 are numpy's default (linear interpolation) over those latencies,
  rounded to the ns;
* the **clock offset** estimate is the minimum latency of the hour: daemon clock - venue clock
  + the smallest one-way delay (network + venue publishing) seen in the hour. It is an upper
  bound of the true offset (daemon minus venue); a negative value means the venue's clock runs
  ahead of the daemon's by at least that much. The minimum merges exactly across segments;
* ``negative_latency``: messages received "before" they happened (venue clock ahead);
* ``gaps``: gap-ledger rows of the instrument in the hour (they belong to the ``book`` channel:
  chain breaks, checksum mismatches, reconnects, drift); ``reconnects``: the daemon's
  ``connect`` control records for the exchange in the hour (every connection it opened);
* channel ``control`` (symbol ``_all``): the daemon's connection records of the exchange in the
  hour (``messages``), of which ``connect`` (``reconnects``) and ``disconnect``/``gap``
  (``gaps``), so readers can tell a silent venue from a stopped daemon;
* ``active_minutes``: bit m set when a row arrived in minute m of the hour; silent minutes =
  60 - minutes with a bit set, over the hour merged from all its segments.

Merging an hour split by a segment boundary: counts, gaps and reconnects add up, max and the
offset are the extremes, minute bitmaps are OR-ed (all exact). Quantiles cannot be merged from
quantiles, so every row also stores a latency histogram (sparse: bin ids and counts) with 16
log-spaced bins per octave of |latency| from 1 us, signed, and one bin for |latency| < 1 us.
An hour held by one row keeps its exact quantiles; an hour held by several rows gets them from
the summed histogram: the midpoint of the bin holding the element of rank round(q (n - 1)),
clamped to the hour's min/max, so within half a bin (~2.2 %, or 1 us near zero) of that
element; where the latencies are sparse it can differ more from the interpolated quantile.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from fluxforge import lake
from fluxforge.demux import ALL_SYMBOLS
from fluxforge.storage import Layout, Storage, sanitize_part
from fluxforge.tables import FEED_STATS

HOUR_NS = 3_600_000_000_000
MINUTE_NS = 60_000_000_000
QUANTILES = (0.5, 0.9, 0.99)
BINS_PER_OCTAVE = 16
BIN_FLOOR_NS = 1_000  # |latency| below 1 us falls in bin 0
# lake table -> channel (the names of ``quality.COVERAGE_CHANNELS``)
CHANNELS = {"trades": "trades", "quotes": "quotes", "book_deltas": "book"}
GAP_CHANNEL = "book"
# the daemon's connection records of an exchange (connect / disconnect / gap), per hour, under
# the symbol the lake uses for exchange-wide partitions
CONTROL_CHANNEL = "control"
CONTROL_SYMBOL = ALL_SYMBOLS
# How ``hourly`` merges the rows of one hour; the SQL mart ``feed_stats_hourly`` is generated
# from the same names (``dbt_macros``): counts add up, extremes stay extremes, the minute
# bitmaps are OR-ed, and only rows with latencies (``TIMED`` > 0) carry quantiles and bins.
TIMED = "latency_messages"
SUMS = ("messages", "rows", "latency_messages", "negative_latency", "gaps", "reconnects")
MINIMA = ("clock_offset_ns", "first_ts_recv")
MAXIMA = ("latency_max_ns", "last_ts_recv")
QUANTILE_COLUMNS = ("latency_p50_ns", "latency_p90_ns", "latency_p99_ns")
MINUTES = 60
MACROS_PATH = "dbt_like_sql/macros/feed_stats_rule.sql"

HOURLY_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("channel", pa.string()),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("segments", pa.int64()),
        ("messages", pa.int64()),
        ("rows", pa.int64()),
        ("latency_messages", pa.int64()),
        ("latency_p50_ns", pa.int64()),
        ("latency_p90_ns", pa.int64()),
        ("latency_p99_ns", pa.int64()),
        ("latency_max_ns", pa.int64()),
        ("clock_offset_ns", pa.int64()),
        ("negative_latency", pa.int64()),
        ("negative_share", pa.float64()),
        ("quantiles_exact", pa.bool_()),
        ("gaps", pa.int64()),
        ("reconnects", pa.int64()),
        ("silent_minutes", pa.int64()),
        ("first_ts_recv", pa.int64()),
        ("last_ts_recv", pa.int64()),
    ]
)


def latency_bins(latency: np.ndarray) -> np.ndarray:
    """Histogram bin of each latency (ns): 0 for |x| < 1 us, else sign * (1 + floor(16 *
    log2(|x| / 1 us))). Bin ids grow with the value, negative bins included."""
    lat = np.asarray(latency, dtype=np.int64)
    mag = np.abs(lat).astype(np.float64)
    big = mag >= BIN_FLOOR_NS
    out = np.zeros(len(lat), dtype=np.int32)
    out[big] = 1 + np.floor(BINS_PER_OCTAVE * np.log2(mag[big] / BIN_FLOOR_NS)).astype(np.int32)
    return np.where(lat < 0, -out, out).astype(np.int32)


def bin_value(b: int) -> float:
    """The value a bin stands for: its geometric midpoint (0 for bin 0)."""
    if b == 0:
        return 0.0
    mid = BIN_FLOOR_NS * 2.0 ** ((abs(b) - 0.5) / BINS_PER_OCTAVE)
    return mid if b > 0 else -mid


def histogram_quantile(bins: Mapping[int, int], q: float, lo: int, hi: int) -> int:
    """Quantile q of a latency histogram {bin: count}: the bin holding the element of rank
    round(q * (n - 1)), as its midpoint clamped to [lo, hi] (the exact min and max)."""
    n = sum(bins.values())
    if n == 0:
        raise ValueError("quantile of an empty histogram")
    rank = round(q * (n - 1))
    seen = 0
    for b in sorted(bins):
        seen += bins[b]
        if seen > rank:
            return round(min(max(bin_value(b), lo), hi))
    raise AssertionError("unreachable: rank beyond the histogram")


# ---------------------------------------------------------------- the same rule in SQL (dbt)
# The expressions below are the functions above written for DuckDB, from the same constants;
# dbt_like_sql/macros/feed_stats_rule.sql is ``dbt_macros()`` (a test requires it up to date)
# and a test requires the mart built with them to equal ``hourly`` row for row.


def sql_bin_value(b: str) -> str:
    """``bin_value`` of the integer bin expression `b`, as a DuckDB double."""
    return (
        f"(case when {b} = 0 then cast(0 as double) else sign({b}) * cast({BIN_FLOOR_NS} as "
        f"double) * pow(cast(2 as double), (cast(abs({b}) as double) - cast(0.5 as double)) "
        f"/ cast({BINS_PER_OCTAVE} as double)) end)"
    )


def sql_quantile_rank(q: str, n: str) -> str:
    """The rank ``histogram_quantile`` looks for: round(q (n - 1)), half to even as Python."""
    return f"round_even(cast({q} as double) * cast({n} - 1 as double), 0)"


def sql_quantile_value(b: str, lo: str, hi: str) -> str:
    """``histogram_quantile``'s answer for the bin `b` holding that rank: its midpoint clamped
    to [lo, hi], rounded half to even to an integer ns."""
    return (
        f"cast(round_even(least(greatest({sql_bin_value(b)}, cast({lo} as double)), "
        f"cast({hi} as double)), 0) as bigint)"
    )


def dbt_macros() -> str:
    """The text of ``dbt_like_sql/macros/feed_stats_rule.sql``."""

    def listing(name: str, values: object) -> str:
        return f"{{% macro {name}() -%}}\n{{{{ return({values!r}) }}}}\n{{%- endmacro %}}\n"

    def expression(name: str, args: tuple[str, ...], body: str) -> str:
        return f"{{% macro {name}({', '.join(args)}) -%}}\n{body}\n{{%- endmacro %}}\n"

    def arg(name: str) -> str:
        return f"{{{{ {name} }}}}"

    return "\n".join(
        [
            "{#- Generated from fluxforge/feed_stats.py: how per-segment feed_stats rows\n"
            '    merge per hour (docs/data-guide.md, "feed_stats: how far each feed can be\n'
            '    trusted"). Edit the module, then write this file with\n'
            "    `uv run python -m fluxforge.feed_stats`. -#}\n",
            listing("feed_stats_sums", list(SUMS)),
            listing("feed_stats_minima", list(MINIMA)),
            listing("feed_stats_maxima", list(MAXIMA)),
            listing(
                "feed_stats_quantiles",
                [[c, q] for c, q in zip(QUANTILE_COLUMNS, QUANTILES, strict=True)],
            ),
            expression("feed_stats_timed", (), f"{TIMED} > 0"),
            expression(
                "feed_stats_silent_minutes", ("bitmap",), f"{MINUTES} - bit_count({arg('bitmap')})"
            ),
            expression("latency_bin_value", ("bin",), sql_bin_value(arg("bin"))),
            expression(
                "latency_quantile_rank", ("q", "total"), sql_quantile_rank(arg("q"), arg("total"))
            ),
            expression(
                "latency_quantile_value",
                ("bin", "lo", "hi"),
                sql_quantile_value(arg("bin"), arg("lo"), arg("hi")),
            ),
        ]
    )


# ---------------------------------------------------------------- per segment (refinery)


def _concat(tables: list[pa.Table], column: str) -> np.ndarray:
    arrays = [t.column(column).to_numpy() for t in tables if t.num_rows]
    if len(arrays) == 1:
        return arrays[0]  # read only below: no copy
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _messages(seq: np.ndarray, ts_event: np.ndarray, ts_recv: np.ndarray) -> tuple:
    """(event time, receive time) per message: rows grouped by seq, latest times. Rows come in
    receive order, so seq rarely needs sorting (checking is linear, sorting is not)."""
    if len(seq) > 1 and not bool(np.all(seq[1:] >= seq[:-1])):
        order = np.argsort(seq, kind="stable")
        seq, ts_event, ts_recv = seq[order], ts_event[order], ts_recv[order]
    starts = np.flatnonzero(np.concatenate(([True], seq[1:] != seq[:-1])))
    return np.maximum.reduceat(ts_event, starts), np.maximum.reduceat(ts_recv, starts)


def _quantiles(lat: np.ndarray) -> list[int]:
    """``np.rint(np.quantile(lat, QUANTILES))`` of int64 latencies, as integers: the same
    order statistics (one partition) and the same interpolation, in numpy's own float
    arithmetic (its "linear" method: ``a + (b - a) t``, or ``b - (b - a) (1 - t)`` when t >=
    0.5), without np.quantile's per-call machinery (about 0.1 ms, once per channel and hour)."""
    n = len(lat)
    where = [(n - 1) * q for q in QUANTILES]
    lows = [min(int(v), n - 1) for v in where]
    kth = sorted({*lows, *(min(i + 1, n - 1) for i in lows)})
    part = np.partition(lat, kth)
    out = []
    for v, lo in zip(where, lows, strict=True):
        a, b = int(part[lo]), int(part[min(lo + 1, n - 1)])
        t = v - lo
        diff = float(b - a)
        value = float(b) - diff * (1 - t) if t >= 0.5 else float(a) + diff * t
        out.append(round(value))  # round half to even, as np.rint
    return out


def _histogram(lat: np.ndarray) -> tuple[list[int], list[int]]:
    """Sparse (bins, counts) of latencies: a bincount over the (small) range of bin ids."""
    bins = latency_bins(lat).astype(np.int64)
    lo = int(bins.min())
    counts = np.bincount(bins - lo)
    present = np.flatnonzero(counts)
    return (present + lo).tolist(), counts[present].tolist()


def _hour_stats(recv_rows: np.ndarray, ev: np.ndarray, rv: np.ndarray, hour: int) -> dict[str, Any]:
    """The statistics of one channel in one hour (rows' receive times, messages' times)."""
    has_time = ev != rv
    lat = (rv - ev)[has_time]
    row: dict[str, Any] = {
        "messages": len(rv),
        "rows": len(recv_rows),
        "first_ts_recv": int(recv_rows.min()) if len(recv_rows) else None,
        "last_ts_recv": int(recv_rows.max()) if len(recv_rows) else None,
        "latency_messages": len(lat),
        "negative_latency": int((lat < 0).sum()),
        "latency_p50_ns": None,
        "latency_p90_ns": None,
        "latency_p99_ns": None,
        "latency_max_ns": None,
        "clock_offset_ns": None,
        "latency_bins": [],
        "latency_counts": [],
    }
    if len(lat):
        row["latency_p50_ns"], row["latency_p90_ns"], row["latency_p99_ns"] = _quantiles(lat)
        row["latency_max_ns"] = int(lat.max())
        row["clock_offset_ns"] = int(lat.min())
        row["latency_bins"], row["latency_counts"] = _histogram(lat)
    row["active_minutes"] = sum(1 << int(m) for m in _minutes(recv_rows, hour))
    return row


def _minutes(recv: np.ndarray, hour: int) -> np.ndarray:
    """The minutes of `hour` in which a row of `recv` arrived. Rows in receive order (the
    usual case, checked) are cut at the 61 minute bounds by binary search instead of a
    division and a count per row (a million book rows: 0.1 ms instead of 5)."""
    start = hour * HOUR_NS
    if len(recv) > 1 and bool(np.all(recv[1:] >= recv[:-1])):
        cuts = np.searchsorted(recv, start + np.arange(MINUTES + 1, dtype=np.int64) * MINUTE_NS)
        return np.flatnonzero(np.diff(cuts))
    return np.flatnonzero(np.bincount((recv - start) // MINUTE_NS, minlength=MINUTES))


def _by_hour(ts: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
    """(hour, selector) of the hours present in `ts` (receive order: usually one hour, told
    by the extremes alone)."""
    lo, hi = int(ts.min()) // HOUR_NS, int(ts.max()) // HOUR_NS
    if lo == hi:
        return [(lo, slice(None))]
    hours = ts // HOUR_NS
    return [(h, m) for h in range(lo, hi + 1) if (m := hours == h).any()]


def _channel_rows(tables: list[pa.Table], hours_wanted: set[int]) -> dict[int, dict[str, Any]]:
    seq = _concat(tables, "seq")
    ts_event = _concat(tables, "ts_event")
    ts_recv = _concat(tables, "ts_recv")
    out: dict[int, dict[str, Any]] = {}
    if len(seq):
        ev, rv = _messages(seq, ts_event, ts_recv)
        msgs = dict(_by_hour(rv))
        empty = np.zeros(0, dtype=bool)
        for h, rows in _by_hour(ts_recv):
            m = msgs.get(h, empty)
            out[h] = _hour_stats(ts_recv[rows], ev[m], rv[m], h)
    empty_ns = np.zeros(0, dtype=np.int64)
    for h in hours_wanted - set(out):
        out[h] = _hour_stats(empty_ns, empty_ns, empty_ns, h)
    return out


def segment_parts(
    parts: Mapping[tuple[str, str, str, str], list[pa.Table]],
    ctl: Iterable[Any],
    segment: str,
) -> dict[tuple[str, str, str], pa.Table]:
    """The ``feed_stats`` rows of one segment from its lake parts ((table, exchange, symbol,
    date) -> tables, as the refinery collects them) and its control events (objects with
    ``exchange``, ``event``, ``ts_recv``): {(exchange, symbol, date): rows}."""
    connects: dict[tuple[str, int], int] = defaultdict(int)
    control: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for ev in ctl:
        key = (sanitize_part(ev.exchange), ev.ts_recv // HOUR_NS)
        control[key].append(ev)
        if ev.event == "connect":
            connects[key] += 1
    by_inst: dict[tuple[str, str, str], dict[str, list[pa.Table]]] = defaultdict(dict)
    for (table, ex, sym, date), tables in parts.items():
        if table in CHANNELS or table == "gap_ledger":
            by_inst[(ex, sym, date)][table] = tables
    # every row of the segment in one table, cut into one slice per partition below:
    # building a table per partition costs ~0.1 ms each (every column converted apart)
    groups: list[tuple[tuple[str, str, str], int]] = []  # (partition, rows)
    every: list[dict[str, Any]] = []
    for (ex, sym, date), tables in sorted(by_inst.items()):
        gap_hours = _concat(tables.get("gap_ledger", []), "ts_to") // HOUR_NS
        gaps = dict(zip(*np.unique(gap_hours, return_counts=True), strict=True))
        rows: list[dict[str, Any]] = []
        for table, channel in sorted(CHANNELS.items(), key=lambda kv: kv[1]):
            wanted = {int(h) for h in gaps} if channel == GAP_CHANNEL else set()
            if table not in tables and not wanted:
                continue
            for h, row in sorted(_channel_rows(tables.get(table, []), wanted).items()):
                row.update(
                    hour=h * HOUR_NS,
                    channel=channel,
                    segment=segment,
                    gaps=int(gaps.get(h, 0)) if channel == GAP_CHANNEL else 0,
                    reconnects=connects.get((ex, h), 0),
                )
                rows.append(row)
        if rows:
            groups.append(((ex, sym, date), len(rows)))
            every += rows
    for (ex, date), rows in sorted(_control_rows(control, segment).items()):
        groups.append(((ex, CONTROL_SYMBOL, date), len(rows)))
        every += rows
    table = pa.Table.from_pylist(every, schema=FEED_STATS)
    out: dict[tuple[str, str, str], pa.Table] = {}
    start = 0
    for key, count in groups:
        out[key] = table.slice(start, count)
        start += count
    return out


def _control_rows(
    control: Mapping[tuple[str, int], list[Any]], segment: str
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """One ``control`` row per exchange and hour with connection records: the records
    (``messages``/``rows``), ``connect`` ones (``reconnects``), ``disconnect`` and daemon
    ``gap`` ones (``gaps``); coverage reads them to tell a silent venue from a stopped daemon."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (ex, h), events in sorted(control.items()):
        ts = np.array([ev.ts_recv for ev in events], dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        row = _hour_stats(ts, empty, empty, h)
        row.update(
            messages=len(events),
            hour=h * HOUR_NS,
            channel=CONTROL_CHANNEL,
            segment=segment,
            gaps=sum(ev.event != "connect" for ev in events),
            reconnects=sum(ev.event == "connect" for ev in events),
        )
        date = datetime.datetime.fromtimestamp(h * 3600, datetime.UTC).date().isoformat()
        out[(ex, date)].append(row)
    return out


# ---------------------------------------------------------------- per hour (readers)


def read(
    storage: Storage,
    exchange: str | None = None,
    symbol: str | None = None,
    date: str | None = None,
    layout: Layout | None = None,
) -> pa.Table:
    """``feed_stats`` merged per exchange · symbol · channel · hour (``HOURLY_SCHEMA``)."""
    return hourly(lake.read_table(storage, "feed_stats", exchange, symbol, date, layout))


def hourly(rows: pa.Table) -> pa.Table:
    """Merge per-segment ``feed_stats`` rows (with their hive columns) into one row per
    exchange · symbol · channel · hour; the module docstring says how. Columnar (polars), so
    a long range stays fast; only hours held by several rows with latencies (a segment
    boundary inside the hour) go through the histogram, in Python."""
    import polars as pl

    if not rows.num_rows:
        return HOURLY_SCHEMA.empty_table()
    keys = ["exchange", "symbol", "channel", "hour"]
    timed = pl.col(TIMED) > 0
    # one chunk per part file: polars converts chunk by chunk, costly for many small parts
    df = pl.from_arrow(rows.combine_chunks())
    assert isinstance(df, pl.DataFrame)
    agg = (
        df.group_by(keys)
        .agg(
            pl.col("segment").n_unique().cast(pl.Int64).alias("segments"),
            *(pl.col(c).sum() for c in SUMS),
            *(pl.col(c).min() for c in MINIMA),
            *(pl.col(c).max() for c in MAXIMA),
            pl.col("active_minutes").bitwise_or().alias("active"),
            timed.sum().alias("timed_rows"),
            *(pl.col(c).filter(timed).first() for c in QUANTILE_COLUMNS),
            pl.col("latency_bins").filter(timed).alias("bins"),
            pl.col("latency_counts").filter(timed).alias("counts"),
        )
        .sort(keys)
    )
    merged = agg.filter(pl.col("timed_rows") > 1)
    if merged.height:  # quantiles of split hours from the summed histograms
        fixes = {name: [] for name in QUANTILE_COLUMNS}
        for r in merged.select(["bins", "counts", "clock_offset_ns", "latency_max_ns"]).rows():
            hist: dict[int, int] = defaultdict(int)
            for bins, counts in zip(r[0], r[1], strict=True):
                for b, c in zip(bins, counts, strict=True):
                    hist[b] += c
            for name, q in zip(QUANTILE_COLUMNS, QUANTILES, strict=True):
                fixes[name].append(histogram_quantile(hist, q, r[2], r[3]))
        fixed = merged.select(keys).with_columns(
            pl.Series(f"_{n}", v, pl.Int64) for n, v in fixes.items()
        )
        agg = agg.join(fixed, on=keys, how="left", nulls_equal=True).with_columns(
            pl.coalesce(f"_{n}", n).alias(n) for n in QUANTILE_COLUMNS
        )
    out = agg.with_columns(
        pl.from_epoch(pl.col("hour") // 1_000_000_000, time_unit="s")
        .dt.replace_time_zone("UTC")
        .alias("hour"),
        (pl.col("timed_rows") <= 1).alias("quantiles_exact"),
        pl.when(pl.col("latency_messages") > 0)
        .then(pl.col("negative_latency") / pl.col("latency_messages"))
        .otherwise(None)
        .alias("negative_share"),
        (MINUTES - pl.col("active").bitwise_count_ones().cast(pl.Int64)).alias("silent_minutes"),
    )
    return out.select(HOURLY_SCHEMA.names).to_arrow().cast(HOURLY_SCHEMA)


def render(table: pa.Table) -> str:
    """``fluxforge status --feeds``: one line per exchange · symbol · channel · hour."""
    if not table.num_rows:
        return "feed statistics: none (no feed_stats rows in the lake for this selection)"

    def ms(ns: int | None) -> str:
        return "-" if ns is None else f"{ns / 1e6:.1f}"

    lines = [
        "feed statistics per hour (latency = receive - event time, ms; offset = min latency):",
        f"  {'hour (UTC)':16} {'exchange':12} {'symbol':16} {'channel':7} {'msgs':>8} "
        f"{'p50':>8} {'p90':>8} {'p99':>8} {'max':>9} {'offset':>8} {'neg%':>5} "
        f"{'gaps':>4} {'recon':>5} {'silent':>6}",
    ]
    for r in table.to_pylist():
        neg = "-" if r["negative_share"] is None else f"{100 * r['negative_share']:.0f}"
        approx = "" if r["quantiles_exact"] else "~"
        lines.append(
            f"  {r['hour'].strftime('%Y-%m-%d %H:%M'):16} {r['exchange']:12} "
            f"{r['symbol']:16} {r['channel']:7} {r['messages']:>8} "
            f"{approx + ms(r['latency_p50_ns']):>8} {approx + ms(r['latency_p90_ns']):>8} "
            f"{approx + ms(r['latency_p99_ns']):>8} {ms(r['latency_max_ns']):>9} "
            f"{ms(r['clock_offset_ns']):>8} {neg:>5} {r['gaps']:>4} {r['reconnects']:>5} "
            f"{r['silent_minutes']:>6}"
        )
    lines.append("  (~ = quantile from the merged histogram of several segments, within ~2.2 %)")
    return "\n".join(lines)


def summary(rows: pa.Table | None) -> dict[str, Any]:
    """A few figures of per-segment ``feed_stats`` rows for asset metadata: feeds and hours,
    messages, the worst p99 and the range of clock offsets (ms), the largest share of negative
    latencies, gaps and reconnects."""
    merged = hourly(rows) if rows is not None else HOURLY_SCHEMA.empty_table()
    out: dict[str, Any] = {"feed_hours": merged.num_rows}
    if not merged.num_rows:
        return out
    data = merged.to_pydict()

    def present(name: str) -> list[Any]:
        return [v for v in data[name] if v is not None]

    p99, offsets, negative = (
        present("latency_p99_ns"),
        present("clock_offset_ns"),
        present("negative_share"),
    )
    out["feeds"] = len(set(zip(data["exchange"], data["symbol"], data["channel"], strict=True)))
    out["messages"] = sum(data["messages"])
    out["gaps"] = sum(data["gaps"])
    out["reconnects"] = sum(data["reconnects"])
    if p99:
        out["worst_latency_p99_ms"] = round(max(p99) / 1e6, 3)
        out["clock_offset_min_ms"] = round(min(offsets) / 1e6, 3)
        out["clock_offset_max_ms"] = round(max(offsets) / 1e6, 3)
        out["max_negative_share"] = round(max(negative), 4)
    return out


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parent.parent / MACROS_PATH
    target.write_text(dbt_macros())
    print(f"wrote {target}")
