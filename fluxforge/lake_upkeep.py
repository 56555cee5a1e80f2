"""Upkeep of the Delta lake tables: compaction, vacuum, stale partitions, migration.

- ``compact``: a closed day's per-segment files of one partition become one file sorted by
  receive order (split only past ``lake.compact_target_mb``), ``book_deltas`` row groups
  aligned to the snapshot windows, in ONE commit that removes the parts it replaces. Readers
  see the day before or after, never in between.
- ``vacuum``: deletes files that no table version younger than the retention still uses.
- ``stale``: partitions holding files built by older normalizer / book-engine versions
  (``fluxforge.versions``), found from file names in the log, no data read.
- ``migrate``: turns a part-file lake (before the Delta tables) into Delta tables in place,
  then rewrites tables whose decimal columns predate decimal(38, 12) (one overwrite commit per
  table that changes its schema; names and version tags of the files are kept).

docs/data-guide.md ("Table format", "Compaction and vacuum", "Versions", "Migration").
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from fluxforge import versions
from fluxforge.config import Config
from fluxforge.lake import (
    COMPACT_PREFIX,
    HISTORY_PREFIX,
    PARTITION_COLUMNS,
    TABLES,
    Lake,
    LakeError,
    LakeFile,
    Staged,
    file_of_key,
    file_rows,
)
from fluxforge.tables import SCHEMAS, lake_schema

UNTAGGED = (0, 0)  # the version tag of a migrated part whose name carried none

# receive order: rows of one source keep their seq order, sources interleave by arrival
SORT_KEYS = {
    "trades": ["ts_recv", "seq"],
    "quotes": ["ts_recv", "seq"],
    "book_deltas": ["ts_recv", "seq"],
    "book_snapshots": ["ts_recv", "seq"],
    "gap_ledger": ["ts_to"],
    "quarantine": ["segment", "line_no"],
}


@dataclass
class CompactedPartition:
    table: str
    exchange: str
    symbol: str
    date: str
    files_in: int
    files_out: int
    rows: int
    bytes_in: int
    bytes_out: int = 0


@dataclass
class UpkeepReport:
    dry_run: bool
    compacted: list[CompactedPartition] = field(default_factory=list)
    vacuumed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "partitions_compacted": len(self.compacted),
            "files_in": sum(c.files_in for c in self.compacted),
            "files_out": sum(c.files_out for c in self.compacted),
            "compacted": [asdict(c) for c in self.compacted],
            "vacuumed": dict(self.vacuumed),
            "files_vacuumed": sum(self.vacuumed.values()),
        }


def _compactable(f: LakeFile) -> bool:
    # history files are replaced wholesale by `fluxforge history`: they stay on their own
    return not f.name.startswith(HISTORY_PREFIX)


def closed_dates(files: list[LakeFile], now: dt.datetime, compact_after_s: float) -> set[str]:
    """Dates that no longer receive segments in the normal course: a later date has been
    published, or the day ended more than `compact_after_s` ago. A late segment after that
    only adds a file, which the next compaction merges."""
    dates = sorted({f.date for f in files})
    out = set()
    for i, day in enumerate(dates):
        try:
            end = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        except ValueError:
            continue
        if i < len(dates) - 1 or (now - end).total_seconds() >= compact_after_s:
            out.add(day)
    return out


def _min_tag(exchange: str, group: list[LakeFile]) -> str:
    """The oldest version tag among the inputs: a compacted file of stale parts stays stale."""
    current = versions.current(exchange)
    found = []
    for f in group:
        tag = versions.parse_tag(f.name)
        if tag is None:
            tag = (0, 0) if versions.is_stale(exchange, f.name) else current
        found.append(tag)
    return versions.format_tag(min(found, default=current))


def compact(
    cfg: Config,
    tables: list[str] | None = None,
    date: str | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    lake: Lake | None = None,
) -> UpkeepReport:
    """Compact every closed partition holding more than one file (or only `date`'s, closed or
    not: an explicit request)."""
    lake = lake or Lake.of(cfg)
    now = now or dt.datetime.now(dt.UTC)
    report = UpkeepReport(dry_run)
    target = cfg.lake.compact_target_mb * 1_000_000
    window = int(cfg.refinery.snapshot_interval_s * 1e9)
    for table in tables or list(TABLES):
        files = [f for f in lake.files(table, date=date) if _compactable(f)]
        closed = {date} if date else closed_dates(files, now, cfg.lake.compact_after_s)
        groups: dict[tuple[str, str, str], list[LakeFile]] = defaultdict(list)
        for f in files:
            if f.date in closed:
                groups[(f.exchange, f.symbol, f.date)].append(f)
        for (ex, sym, day), group in sorted(groups.items()):
            if len(group) < 2:
                continue
            item = CompactedPartition(
                table, ex, sym, day, len(group), 0, sum(max(f.rows, 0) for f in group),
                sum(max(f.size, 0) for f in group),
            )  # fmt: skip
            report.compacted.append(item)
            if dry_run:
                item.files_out = max(1, math.ceil(item.bytes_in / target))
                continue
            data = lake.read(table, files=group).drop_columns(list(PARTITION_COLUMNS))
            keys = [k for k in SORT_KEYS.get(table, []) if k in data.column_names]
            if keys:
                data = data.take(pc.sort_indices(data, [(k, "ascending") for k in keys]))
            pieces = max(1, math.ceil(item.bytes_in / target))
            step = max(1, math.ceil(data.num_rows / pieces))
            staged = [
                lake.stage(
                    table,
                    data.slice(start, step),
                    ex,
                    sym,
                    day,
                    COMPACT_PREFIX.removeprefix("part-"),
                    cfg.refinery.row_group_size,
                    window if table == "book_deltas" else None,
                    tag=_min_tag(ex, group),
                )
                for start in range(0, data.num_rows, step)
            ]
            same = {f.key for f in group} & {s.key for s in staged}
            if same:  # already one compacted file with these exact bytes
                continue
            lake.commit(
                table,
                staged,
                remove=group,
                metadata={
                    "fluxforge.operation": "compact",
                    "fluxforge.partition": f"{ex}/{sym}/{day}",
                },
            )
            item.files_out = len(staged)
            item.bytes_out = sum(s.size for s in staged)
    return report


def vacuum(
    cfg: Config,
    dry_run: bool = False,
    retention_days: float | None = None,
    lake: Lake | None = None,
) -> UpkeepReport:
    """Delete files no longer referenced by any table version younger than the retention
    (default ``lake.vacuum_retention_days``): replaced parts, and staged files of attempts that
    never committed (a crash between writing and committing)."""
    lake = lake or Lake.of(cfg)
    days = cfg.lake.vacuum_retention_days if retention_days is None else retention_days
    report = UpkeepReport(dry_run)
    for table in TABLES:
        handle = lake.table(table)
        if handle is None:
            continue
        removed = handle.vacuum(
            retention_hours=int(days * 24),
            dry_run=dry_run,
            enforce_retention_duration=False,
            # "full": the table's files are listed, so files no commit names (staged by an
            # attempt that crashed before committing, maybe torn) go too, once older than
            # the retention; the default ("lite") deletes only the files commits removed
            full=True,
        )
        report.vacuumed[table] = len(removed)
    return report


@dataclass(frozen=True)
class StalePartition:
    table: str
    exchange: str
    symbol: str
    date: str
    files: int
    built_with: str  # the oldest version tag found, "untagged" for migrated parts
    current: str


def stale(cfg: Config, lake: Lake | None = None) -> list[StalePartition]:
    """Partitions holding files built with older normalizer/book versions than today's."""
    lake = lake or Lake.of(cfg)
    found: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for table in TABLES:
        for f in lake.files(table):
            if versions.is_stale(f.exchange, f.name):
                tag = versions.parse_tag(f.name)
                label = "untagged" if tag in (None, UNTAGGED) else versions.format_tag(tag)
                found[(table, f.exchange, f.symbol, f.date)].append(label)
    return [
        StalePartition(t, ex, sym, day, len(tags), min(tags), versions.tag(ex))
        for (t, ex, sym, day), tags in sorted(found.items())
    ]


def stale_dates(cfg: Config, lake: Lake | None = None) -> list[str]:
    """The dates a ``rebuild`` would refresh to clear every stale partition."""
    return sorted({p.date for p in stale(cfg, lake)})


@dataclass
class MigrationReport:
    dry_run: bool
    tables: dict[str, str] = field(default_factory=dict)  # table -> what was (or would be) done

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "tables": dict(self.tables)}


def migrate(cfg: Config, dry_run: bool = False, lake: Lake | None = None) -> MigrationReport:
    """Bring every table to the current format in place. A part-file table folder becomes a
    Delta table; a table (or part files) of older column types (times as int64 ns, decimals as
    decimal(38, 18), whose ``price * size`` overflows in DuckDB) is rewritten to the current
    types. Each table changes in ONE commit (readers see the old table or the new one; time
    travel still reads the old files). Files already current are committed as they are, and
    a value that does not fit the current types stops the migration naming its file (nothing
    committed). Running it again changes nothing."""
    from deltalake import DeltaTable

    lake = lake or Lake.of(cfg)
    report = MigrationReport(dry_run)
    for table in TABLES:
        uri = lake.uri(table)
        if DeltaTable.is_deltatable(uri, storage_options=lake.options or None):
            outdated = lake.outdated_columns(table)
            if not outdated:
                report.tables[table] = "already a Delta table"
                continue
            keys = [f.key for f in lake.files(table)]
            what = f"rewritten to the current types ({'; '.join(outdated)})"
        else:
            keys = lake.storage.list(lake.layout.lake_table(table), "*.parquet", recursive=True)
            if not keys:
                report.tables[table] = "no files"
                continue
            what = "committed"
        report.tables[table] = f"{len(keys)} files " + (f"would be {what}" if dry_run else what)
        if not dry_run:
            staged = [_current_file(cfg, lake, table, key) for key in keys]
            lake.replace_all(
                table, staged, {"fluxforge.operation": "migrate", "fluxforge.migrate": what}
            )
    return report


def _stem(name: str) -> str:
    """The ``stem`` ``Lake.stage`` was given for a file name (``part-{stem}-{tag}-{hash}``)."""
    base = name.removesuffix(".parquet").removeprefix("part-")
    found = versions.parse_tag(name)
    if found is None:
        return base
    return base[: base.find(f"-{versions.format_tag(found)}-")]


def _current_file(cfg: Config, lake: Lake, table: str, key: str) -> Staged:
    """`key` as a file of the current format: committed as it is when it already is one,
    else rewritten beside it under its stem and version tag (an untagged part comes out
    tagged v0.0, still stale)."""
    body = lake.storage.read_bytes(key)
    f = file_of_key(key)
    try:
        data = file_rows(body, key, table)
    except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise LakeError(f"{key}: cannot be rewritten to the current types: {exc}") from None
    stored = pq.read_schema(io.BytesIO(body)).remove_metadata()
    if stored.equals(lake_schema(SCHEMAS[table])):
        # statistics from the rows; name and size are the file's own
        st = lake.stage(table, data, f.exchange, f.symbol, f.date, "x", write=False)
        prefix = lake.layout.lake_table(table) + "/"
        return replace(st, key=key, path=key.removeprefix(prefix), size=len(body))
    window = int(cfg.refinery.snapshot_interval_s * 1e9)
    return lake.stage(
        table,
        data,
        f.exchange,
        f.symbol,
        f.date,
        _stem(f.name),
        cfg.refinery.row_group_size,
        window if table == "book_deltas" else None,
        tag=_min_tag(f.exchange, [f]),
    )


def table_summary(lake: Lake, table: str) -> dict[str, Any]:
    """Version, row count, file count and URI of a table (Dagster metadata, status)."""
    handle = lake.table(table)
    if handle is None:
        return {"table": table, "version": None, "rows": 0, "files": 0, "uri": lake.uri(table)}
    files = lake.files(table)
    return {
        "table": table,
        "version": handle.version(),
        "rows": sum(max(f.rows, 0) for f in files),
        "files": len(files),
        "uri": lake.uri(table),
    }
