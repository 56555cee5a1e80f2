"""Data-quality evaluations over lake part files: market sanity, reconciliation, coverage.

Plain functions over Arrow tables (the Dagster asset checks are thin adapters over them).
Tables are read with ``fluxforge.lake`` so they carry the hive columns exchange/symbol/date.
"""

from __future__ import annotations

import datetime
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from fluxforge import lake, schemas
from fluxforge.storage import Layout, Storage
from fluxforge.tables import at_lake_precision

HOUR_NS = 3_600_000_000_000
_HIVE = re.compile(r"(exchange|symbol|date)=([^/]+)")
COVERAGE_CHANNELS = {"trades": "trades", "quotes": "quotes", "book_deltas": "book"}
COVERAGE_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("channel", pa.string()),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("rows", pa.int64()),
        ("first_ts_recv", pa.int64()),
        ("last_ts_recv", pa.int64()),
        ("gaps", pa.int64()),
        # null where the hour has rows; for an expected hour without rows (``missing_hours``):
        # daemon_down | venue_silent | no_data
        ("reason", pa.string()),
    ]
)
MISSING_REASONS = ("daemon_down", "venue_silent", "no_data")


@dataclass
class Finding:
    """One check outcome: passed, a count, and a few examples for the UI."""

    passed: bool
    count: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str = ""

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        if self.examples:
            out["examples"] = "\n".join(self.examples[:10])
        if self.detail:
            out["detail"] = self.detail
        return out


def parts_by_table(keys: Iterable[str]) -> dict[str, list[str]]:
    """Part keys grouped by lake table (`processed/{table}/exchange=.../part-*.parquet`)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        if not key.endswith(".parquet"):
            continue
        parts = key.split("/")
        for i, part in enumerate(parts):
            if part.startswith("exchange=") and i > 0:
                out.setdefault(parts[i - 1], []).append(key)
                break
    return out


def read_parts(storage: Storage, table: str, keys: Sequence[str]) -> pa.Table | None:
    """The rows of the given part files with their hive columns, None when there are none."""
    if not keys:
        return None
    return lake.read_files(storage, table, keys)


def partition_parts(
    storage: Storage,
    layout: Layout,
    tables: Iterable[str],
    source: str,
    date: str,
    segments: Iterable[str],
) -> list[str]:
    """Lake part keys of `date` written for the given raw segments of `source`.

    Read from the refinery's per-segment manifests (``state/segments/{source}/{stem}.json``,
    the part files each segment wrote), so the cost is per segment, not per lake size; a
    segment without a manifest is looked up by listing its tables."""
    wanted = set(tables)
    out: set[str] = set()
    missing: list[str] = []
    for name in segments:
        stem = posixpath.basename(name).removesuffix(".ndjson")
        key = layout.state("segments", source, f"{stem}.json")
        if not storage.exists(key):
            missing.append(f"{source}-{stem}")
            continue
        files = orjson.loads(storage.read_bytes(key)).get("files", [])
        out.update(
            f for f in files if f"/date={date}/" in f and parts_by_table([f]).keys() <= wanted
        )
    if missing:
        lake_ = lake.Lake(storage, layout)
        for table in wanted:
            for f in lake_.files(table, date=date):
                if any(f.name.startswith(f"part-{stem}-") for stem in missing):
                    out.add(f.key)
    return sorted(out)


def schema_valid(storage: Storage, table: str, keys: Sequence[str]) -> Finding:
    """Every part file of `table` passes its pandera schema (fluxforge.schemas)."""
    problems = []
    for key in keys:
        hive = dict(_HIVE.findall(key))
        try:
            data = lake.read_file(storage, key, table)
            schemas.validate(
                table, data, hive.get("exchange", ""), hive.get("symbol", ""), hive.get("date", "")
            )
        except (schemas.SchemaViolation, lake.LakeError) as exc:
            problems.append(f"{key}: {str(exc)[:300]}")
    detail = f"{len(keys)} part files validated"
    return Finding(not problems, len(problems), problems, detail)


def crossed_books(snapshots: pa.Table | None, quotes: pa.Table | None) -> Finding:
    """Best bid >= best ask in any snapshot or quote (both sides present)."""
    examples: list[str] = []
    count = 0
    if snapshots is not None and snapshots.num_rows:
        two_sided = pc.and_(
            pc.greater(pc.fill_null(pc.list_value_length(snapshots["bid_px"]), 0), 0),
            pc.greater(pc.fill_null(pc.list_value_length(snapshots["ask_px"]), 0), 0),
        )
        snapshots = snapshots.filter(two_sided)
        bid = pc.list_element(snapshots["bid_px"], 0)
        ask = pc.list_element(snapshots["ask_px"], 0)
        bad = pc.fill_null(pc.greater_equal(bid, ask), False)
        n = pc.sum(bad).as_py() or 0
        count += n
        if n:
            rows = snapshots.filter(bad).slice(0, 3).to_pylist()
            examples += [f"snapshot {r['venue_symbol']} ts={r['ts_event']}" for r in rows]
    if quotes is not None and quotes.num_rows:
        bad = pc.fill_null(
            pc.and_(
                pc.and_(pc.greater(quotes["bid_px"], 0), pc.greater(quotes["ask_px"], 0)),
                pc.greater_equal(quotes["bid_px"], quotes["ask_px"]),
            ),
            False,
        )
        n = pc.sum(bad).as_py() or 0
        count += n
        if n:
            rows = quotes.filter(bad).slice(0, 3).to_pylist()
            examples += [
                f"quote {r['venue_symbol']} ts={r['ts_recv']} {r['bid_px']}>={r['ask_px']}"
                for r in rows
            ]
    return Finding(count == 0, count, examples)


def duplicate_trade_ids(trades: pa.Table | None) -> Finding:
    """The same (exchange, symbol, trade_id) more than once. Venues without trade ids (Kraken
    v1, Bitget) send none: empty ids are not compared."""
    if trades is not None:
        trades = trades.filter(pc.fill_null(pc.not_equal(trades["trade_id"], ""), False))
    if trades is None or not trades.num_rows:
        return Finding(True)
    keys = [c for c in ("exchange", "symbol", "venue_symbol") if c in trades.column_names]
    grouped = trades.group_by([*keys, "trade_id"]).aggregate([("trade_id", "count")])
    dup = grouped.filter(pc.greater(grouped["trade_id_count"], 1))
    n = int(pc.sum(pc.subtract(dup["trade_id_count"], 1)).as_py() or 0) if dup.num_rows else 0
    ex = [
        f"{r.get('venue_symbol')} id={r['trade_id']} x{r['trade_id_count']}"
        for r in dup.slice(0, 5).to_pylist()
    ]
    return Finding(n == 0, n, ex)


def trades_outside_book(
    trades: pa.Table | None, quotes: pa.Table | None, tolerance: float = 0.05
) -> Finding:
    """Trades priced more than `tolerance` outside the last quoted bid/ask (same symbol)."""
    if trades is None or quotes is None or not trades.num_rows or not quotes.num_rows:
        return Finding(True, detail="no trades or no quotes to compare")
    import polars as pl

    key = [
        c for c in ("exchange", "symbol") if c in trades.column_names and c in quotes.column_names
    ]
    t = pl.from_arrow(trades.select([*key, "ts_recv", "price", "trade_id"])).with_columns(
        pl.col("price").cast(pl.Float64)
    )
    q = pl.from_arrow(quotes.select([*key, "ts_recv", "bid_px", "ask_px"])).with_columns(
        pl.col("bid_px").cast(pl.Float64), pl.col("ask_px").cast(pl.Float64)
    )
    q = q.filter((pl.col("bid_px") > 0) & (pl.col("ask_px") > 0))
    if q.is_empty():
        return Finding(True, detail="no two-sided quotes")
    j = t.sort("ts_recv").join_asof(
        q.sort("ts_recv"), on="ts_recv", by=key or None, check_sortedness=False
    )
    bad = j.filter(
        pl.col("bid_px").is_not_null()
        & (
            (pl.col("price") < pl.col("bid_px") * (1 - tolerance))
            | (pl.col("price") > pl.col("ask_px") * (1 + tolerance))
        )
    )
    ex = [
        f"{r.get('symbol', '')} trade {r['trade_id']} @{r['price']} vs {r['bid_px']}/{r['ask_px']}"
        for r in bad.head(5).to_dicts()
    ]
    return Finding(bad.height == 0, bad.height, ex, detail=f"tolerance {tolerance:.0%}")


def stale_books(deltas: pa.Table | None, max_silence_s: float = 120.0) -> Finding:
    """A book with no update for longer than `max_silence_s` inside the data."""
    if deltas is None or deltas.num_rows < 2:
        return Finding(True, detail="fewer than two book updates")
    import polars as pl

    key = [c for c in ("exchange", "symbol", "venue_symbol") if c in deltas.column_names]
    df = pl.from_arrow(deltas.select([*key, "ts_recv"]))
    gaps = (
        df.sort("ts_recv")
        .with_columns(pl.col("ts_recv").diff().over(key).alias("silence"))
        .group_by(key)
        .agg(pl.col("silence").max())
        .filter(pl.col("silence") > int(max_silence_s * 1e9))
    )
    ex = [f"{r[key[-1]]}: {r['silence'] / 1e9:.0f} s without an update" for r in gaps.to_dicts()]
    return Finding(gaps.height == 0, gaps.height, ex, detail=f"threshold {max_silence_s:.0f} s")


def book_drift(drift: pa.Table | None) -> tuple[Finding, bool]:
    """Venue snapshots that disagreed with the replayed book (``book_drift`` rows), and whether
    any of them is on a book the venue verifies (checksum or update-id chain): there, drift is
    a bug of ours; elsewhere the venue's word against ours."""
    if drift is None or not drift.num_rows:
        return Finding(True, detail="no venue snapshot disagreed with the replayed book"), False
    rows = drift.to_pylist()
    verified = [r for r in rows if r["integrity"] != "none"]
    examples = [
        f"{r.get('exchange', '')} {r['venue_symbol']} epoch {r['book_epoch']} ({r['integrity']}): "
        f"{r['levels_differing']} of {r['levels_compared']} levels, max size diff "
        f"{r['max_size_diff']}"
        for r in (verified or rows)[:5]
    ]
    detail = f"{len(verified)} on verified books, {len(rows) - len(verified)} elsewhere"
    return Finding(False, len(rows), examples, detail), bool(verified)


def reconcile(report: Mapping[str, Any]) -> Finding:
    """Lines in = lines that produced rows + quarantined + control (docs/table-schemas.md,
    "Line accounting")."""
    lines = int(report.get("lines", 0))
    quarantined = int(report.get("quarantined", 0))
    control = int(report.get("control", 0))
    data = report.get("data_lines", report.get("data"))
    if data is None:
        ok = quarantined + control <= lines
        detail = f"lines={lines} quarantined={quarantined} control={control} (data not reported)"
        return Finding(ok, 0 if ok else 1, [] if ok else [detail], detail)
    data = int(data)
    diff = lines - (data + quarantined + control)
    detail = f"lines={lines} = data {data} + quarantined {quarantined} + control {control}"
    return Finding(diff == 0, abs(diff), [] if diff == 0 else [f"{detail} (off by {diff})"], detail)


def coverage(tables: Mapping[str, pa.Table | None], gaps: pa.Table | None) -> pa.Table:
    """Rows per exchange · symbol · channel · UTC hour, with first/last receive time and the
    gap-ledger rows of that hour (gaps of book channels count against `book`)."""
    import polars as pl

    frames = []
    for table, channel in COVERAGE_CHANNELS.items():
        t = tables.get(table)
        if t is None or not t.num_rows:
            continue
        df = pl.from_arrow(t.select(["exchange", "symbol", "ts_recv"]))
        frames.append(df.with_columns(pl.lit(channel).alias("channel")))
    if not frames:
        return COVERAGE_SCHEMA.empty_table()
    # receive times at the lake's precision: coverage from a segment's rows in memory (its
    # manifest) and from the same rows read back from the lake must agree
    df = pl.concat(frames).with_columns(
        (pl.col("ts_recv") // HOUR_NS).alias("h"), at_lake_precision(pl.col("ts_recv"))
    )
    agg = df.group_by(["exchange", "symbol", "channel", "h"]).agg(
        pl.len().cast(pl.Int64).alias("rows"),
        pl.col("ts_recv").min().alias("first_ts_recv"),
        pl.col("ts_recv").max().alias("last_ts_recv"),
    )
    if gaps is not None and gaps.num_rows and "exchange" in gaps.column_names:
        g = (
            pl.from_arrow(gaps.select(["exchange", "symbol", "ts_to"]))
            .with_columns((pl.col("ts_to") // HOUR_NS).alias("h"), pl.lit("book").alias("channel"))
            .group_by(["exchange", "symbol", "channel", "h"])
            .agg(pl.len().cast(pl.Int64).alias("gaps"))
        )
        agg = agg.join(g, on=["exchange", "symbol", "channel", "h"], how="left")
    else:
        agg = agg.with_columns(pl.lit(0, pl.Int64).alias("gaps"))
    agg = (
        agg.with_columns(
            pl.col("gaps").fill_null(0).cast(pl.Int64),
            pl.from_epoch(pl.col("h") * 3600, time_unit="s")
            .dt.replace_time_zone("UTC")
            .alias("hour"),
            pl.lit(None, pl.Utf8).alias("reason"),
        )
        .sort(["exchange", "symbol", "channel", "h"])
        .select(COVERAGE_SCHEMA.names)
    )
    return agg.to_arrow().cast(COVERAGE_SCHEMA)


def merge_coverage(summaries: Iterable[list[Any]], tables: Iterable[pa.Table]) -> pa.Table:
    """One coverage view from per-segment summary rows (exchange, symbol, channel, hour epoch
    s, rows, first_ts_recv, last_ts_recv, gaps) and coverage tables: rows and gaps add up,
    first/last receive times are the extremes."""
    import polars as pl

    frames = [t for t in tables if t.num_rows]
    rows = list(summaries)
    if rows:
        cols = list(zip(*rows, strict=True))
        frames.append(
            pa.table(
                {
                    "exchange": pa.array(cols[0], pa.string()),
                    "symbol": pa.array(cols[1], pa.string()),
                    "channel": pa.array(cols[2], pa.string()),
                    "hour": pa.array(cols[3], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                    "rows": pa.array(cols[4], pa.int64()),
                    "first_ts_recv": pa.array(cols[5], pa.int64()),
                    "last_ts_recv": pa.array(cols[6], pa.int64()),
                    "gaps": pa.array(cols[7], pa.int64()),
                    "reason": pa.nulls(len(rows), pa.string()),
                }
            )
        )
    if not frames:
        return COVERAGE_SCHEMA.empty_table()
    keys = ["exchange", "symbol", "channel", "hour"]
    df = pl.concat([pl.from_arrow(f.cast(COVERAGE_SCHEMA)) for f in frames])
    agg = (
        df.group_by(keys)
        .agg(
            pl.col("rows").sum(),
            pl.col("first_ts_recv").min(),
            pl.col("last_ts_recv").max(),
            pl.col("gaps").sum(),
            pl.col("reason").first(),
        )
        .sort(keys)
        .select(COVERAGE_SCHEMA.names)
    )
    return agg.to_arrow().cast(COVERAGE_SCHEMA)


def missing_hours(
    cov: pa.Table, recorded: Iterable[int], control: Iterable[tuple[str, int]]
) -> pa.Table:
    """Coverage with a zero-row line for every expected hour of an active feed that has none.

    A feed (exchange · symbol · channel with rows in `cov`) is expected every hour from its
    first hour with rows to the last hour the source recorded (`recorded`: hour numbers,
    epoch s // 3600, of the source's segments). The reason of a missing hour:
    ``daemon_down`` when the source wrote no segment for it (no data, no control record);
    ``venue_silent`` when the exchange was connected: another of its feeds has rows in the
    hour or the daemon wrote connection records for it (`control`: (exchange, hour number));
    ``no_data`` when the source recorded other exchanges only."""
    recorded = set(recorded)
    if not cov.num_rows:
        return cov
    data = cov.to_pydict()
    hours = [int(h.timestamp()) // 3600 for h in data["hour"]]
    feeds: dict[tuple[str, str, str], set[int]] = {}
    alive: set[tuple[str, int]] = set(control)
    for ex, sym, ch, h, n in zip(
        data["exchange"], data["symbol"], data["channel"], hours, data["rows"], strict=True
    ):
        feeds.setdefault((ex, sym, ch), set()).add(h)
        if n:
            alive.add((ex, h))
    last = max(recorded | set(hours))
    extra: dict[str, list[Any]] = {name: [] for name in COVERAGE_SCHEMA.names}
    for (ex, sym, ch), seen in sorted(feeds.items()):
        for h in range(min(seen), last + 1):
            if h in seen:
                continue
            if h not in recorded:
                reason = "daemon_down"
            elif (ex, h) in alive:
                reason = "venue_silent"
            else:
                reason = "no_data"
            for name, value in (
                ("exchange", ex), ("symbol", sym), ("channel", ch), ("hour", h * 3600),
                ("rows", 0), ("first_ts_recv", None), ("last_ts_recv", None), ("gaps", 0),
                ("reason", reason),
            ):  # fmt: skip
                extra[name].append(value)
    if not extra["exchange"]:
        return cov
    added = pa.table(
        {
            **{
                k: pa.array(v, COVERAGE_SCHEMA.field(k).type)
                for k, v in extra.items()
                if k != "hour"
            },
            "hour": pa.array(extra["hour"], pa.int64()).cast(COVERAGE_SCHEMA.field("hour").type),
        }
    ).select(COVERAGE_SCHEMA.names)
    out = pa.concat_tables([cov.cast(COVERAGE_SCHEMA), added])
    keys = [(k, "ascending") for k in ("exchange", "symbol", "channel", "hour")]
    return out.take(pc.sort_indices(out, keys))


def archived_segments(cfg: Any, source: str, date: str) -> list[str]:
    """Names of the archived raw segments of one (source, UTC date)."""
    layer = cfg.storage.etl_input
    storage = _open(layer)
    pattern = f"segment_{date.replace('-', '')}T*.ndjson"
    keys = storage.list(Layout.of(layer).raw_state_dir("archive", source), pattern)
    return [posixpath.basename(k) for k in keys]


def _open(layer: Any) -> Storage:
    from fluxforge.storage import open_storage

    return open_storage(layer)


def partition_coverage(cfg: Any, source: str, date: str) -> pa.Table:
    """Coverage of one (date, source) partition over its archived segments: the summaries the
    refinery keeps in each segment's manifest, and for a segment without one (written by an
    older version) its lake parts, read."""
    layer = cfg.storage.etl_output
    storage = _open(layer)
    layout = Layout.of(layer)
    summaries: list[list[Any]] = []
    unsummarized: list[str] = []
    for name in archived_segments(cfg, source, date):
        stem = posixpath.basename(name).removesuffix(".ndjson")
        key = layout.state("segments", source, f"{stem}.json")
        manifest = orjson.loads(storage.read_bytes(key)) if storage.exists(key) else {}
        if manifest.get("state") == "done" and "coverage" in manifest:
            summaries.extend(r[1:] for r in manifest["coverage"] if r[0] == date)
        else:
            unsummarized.append(name)
    read: list[pa.Table] = []
    if unsummarized:
        read.append(parts_coverage(storage, layout, source, date, unsummarized))
    return merge_coverage(summaries, read)


def partition_coverage_with_missing(cfg: Any, source: str, date: str) -> pa.Table:
    """``partition_coverage`` plus a zero-row line, with its reason, for every expected hour
    of an active feed that has none (``missing_hours``); the source's recorded hours come from
    its archived segment names, the exchanges' connection records from ``feed_stats``."""
    from fluxforge import feed_stats
    from fluxforge.segments import parse_segment_name

    cov = partition_coverage(cfg, source, date)
    recorded = set()
    for name in archived_segments(cfg, source, date):
        hour = parse_segment_name(name).hour  # YYYYMMDDTHH
        stamp = datetime.datetime.strptime(hour, "%Y%m%dT%H").replace(tzinfo=datetime.UTC)
        recorded.add(int(stamp.timestamp()) // 3600)
    layer = cfg.storage.etl_output
    rows = lake.read_table(
        _open(layer), "feed_stats", None, feed_stats.CONTROL_SYMBOL, date, Layout.of(layer)
    )
    rows = rows.filter(pc.equal(rows["channel"], feed_stats.CONTROL_CHANNEL))
    control = {
        (ex, h // feed_stats.HOUR_NS)
        for ex, h in zip(rows["exchange"].to_pylist(), rows["hour"].to_pylist(), strict=True)
    }
    return missing_hours(cov, recorded, control)


def parts_coverage(
    storage: Storage, layout: Layout, source: str, date: str, segments: Sequence[str]
) -> pa.Table:
    """Coverage of `date` computed from the lake parts the given segments wrote."""
    keys = partition_parts(
        storage, layout, [*COVERAGE_CHANNELS, "gap_ledger"], source, date, segments
    )
    by_table = parts_by_table(keys)
    tables = {
        t: _read_column(storage, by_table.get(t, []), t, "ts_recv") for t in COVERAGE_CHANNELS
    }
    return coverage(
        tables, _read_column(storage, by_table.get("gap_ledger", []), "gap_ledger", "ts_to")
    )


def _read_column(storage: Storage, keys: Sequence[str], table: str, column: str) -> pa.Table | None:
    """One column of many files of `table` plus their exchange/symbol (coverage reads only
    times), in memory form."""
    out = []
    for key in keys:
        data = lake.read_file(storage, key, table, [column])
        hive = dict(_HIVE.findall(key))
        for name in ("exchange", "symbol"):
            data = data.append_column(name, pa.array([hive.get(name, "")] * data.num_rows))
        out.append(data)
    return pa.concat_tables(out) if out else None
