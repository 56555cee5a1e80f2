"""Lifecycle rotation (SPEC §6): hot days older than `hot_days` move to cold Parquet.

``plan()`` is pure: from the hot inventory (rows per table per day partition), today and
`hot_days` it lists the (table, day) partitions to rotate: every day before the hot window
(the last `hot_days` days, today included, in ``lifecycle.timezone``).

``execute()`` rotates them one partition at a time, two-phase, in one transaction per partition:

1. ``export``: lock the partition against writes (``SHARE`` mode; readers go on) and COPY it out
   ordered by its natural key as CSV; rows, key range and SHA-256 of those bytes describe it;
2. ``write``: unless the cold copy ``{cold_dir}/{table}/year=Y/month=M/day=D/data.parquet`` on the
   ETL output storage already matches (rows, key range, checksum, kept in the Parquet footer's
   key-value metadata), write it (one atomic object/file, zstd, page checksums);
3. ``verify``: read the cold copy's footer back: row count and metadata must match the export,
   else the rotation stops with an error and the partition stays;
4. ``drop``: ``DROP TABLE`` the partition, then ``commit``;
5. ``analyze``: ANALYZE the parent tables that lost partitions.

The lock makes the export and the drop see the same rows. A crash or a database outage at any
step loses nothing: before the commit the partition is intact (the transaction rolls back) and a
re-run finds the cold copy already matching (or rewrites it); after the commit the rows are in
the verified cold copy. A `hook(step, table, day)` callback runs before every step (the fault
tests stop PostgreSQL there).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from fluxforge.hot import HotStore, from_csv, partition_name, window_start
from fluxforge.storage import Layout, Storage

log = logging.getLogger(__name__)

STEPS = ("export", "write", "verify", "drop", "commit", "analyze")
COLD_FILE = "data.parquet"
META_PREFIX = "fluxforge."

Hook = Callable[[str, str, date], None]


class RotationError(RuntimeError):
    """The cold copy of a partition does not match; names table, day and what differs."""


@dataclass(frozen=True)
class DayTask:
    table: str
    day: date
    rows: int
    cold_key: str


@dataclass
class Plan:
    today: date
    hot_days: int
    first_hot_day: date
    tasks: list[DayTask] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows: dict[str, int] = {}
        for t in self.tasks:
            rows[t.table] = rows.get(t.table, 0) + t.rows
        return {
            "today": self.today.isoformat(),
            "hot_days": self.hot_days,
            "first_hot_day": self.first_hot_day.isoformat(),
            "days": sorted({t.day.isoformat() for t in self.tasks}),
            "rows": rows,
            "partitions": [
                {"table": t.table, "day": t.day.isoformat(), "rows": t.rows, "cold": t.cold_key}
                for t in self.tasks
            ],
        }


def cold_key(layout: Layout, table: str, day: date) -> str:
    return layout.cold_part(table, day.year, day.month, day.day, COLD_FILE)


def plan(
    inventory: Mapping[str, Mapping[date, int]],
    today: date,
    hot_days: int,
    layout: Layout,
) -> Plan:
    """Partitions to rotate: every (table, day) before the hot window, oldest day first."""
    first = window_start(today, hot_days)
    out = Plan(today=today, hot_days=hot_days, first_hot_day=first)
    for table in sorted(inventory):
        for day, rows in inventory[table].items():
            if day < first:
                out.tasks.append(DayTask(table, day, rows, cold_key(layout, table, day)))
    out.tasks.sort(key=lambda t: (t.day, t.table))
    return out


def inventory(hot: HotStore) -> dict[str, dict[date, int]]:
    """Rows per existing day partition of every hot table."""
    out: dict[str, dict[date, int]] = {}
    with hot.connect() as conn:
        for table in hot.tables:
            if not hot._exists(conn, table):
                continue
            out[table] = {day: hot._count(conn, table, day) for day in hot._days(conn, table)}
    return out


@dataclass
class Result:
    plan: dict[str, Any]
    rotated: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0
    cold_reused: int = 0
    partitions_dropped: int = 0
    analyzed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        total = sum(self.rows.values())
        out["rows_per_s"] = round(total / self.seconds) if self.seconds > 0 else None
        return out


@dataclass(frozen=True)
class Export:
    rows: int
    sha256: str
    key_min: str
    key_max: str
    data: pa.Table

    def metadata(self, table: str, day: date) -> dict[bytes, bytes]:
        meta = {
            "table": table,
            "day": day.isoformat(),
            "rows": str(self.rows),
            "sha256": self.sha256,
            "key_min": self.key_min,
            "key_max": self.key_max,
        }
        return {(META_PREFIX + k).encode(): v.encode() for k, v in meta.items()}


def _key_text(data: pa.Table, key: tuple[str, ...], row: int) -> str:
    return "|".join(str(data.column(k)[row].as_py()) for k in key)


def export_partition(hot: HotStore, conn: Any, table: str, day: date) -> Export:
    raw = hot.export_csv(conn, table, sql.SQL("day = %s"), (day,))
    data = from_csv(raw, hot.columns(table))
    key = hot.key(table)
    n = data.num_rows
    return Export(
        rows=n,
        sha256=hashlib.sha256(raw).hexdigest(),
        key_min=_key_text(data, key, 0) if n else "",
        key_max=_key_text(data, key, n - 1) if n else "",
        data=data,
    )


def encode_cold(export: Export, table: str, day: date) -> bytes:
    data = export.data.replace_schema_metadata(export.metadata(table, day))
    buf = io.BytesIO()
    pq.write_table(
        data,
        buf,
        compression="zstd",
        row_group_size=1_000_000,
        write_statistics=True,
        write_page_checksum=True,
    )
    return buf.getvalue()


def cold_matches(storage: Storage, key: str, export: Export, table: str, day: date) -> str | None:
    """None when the cold copy at `key` matches the export, else why not."""
    if not storage.exists(key):
        return "missing"
    fs = storage.arrow_filesystem()
    try:
        with fs.open_input_file(storage.arrow_path(key)) as fh:
            meta = pq.read_metadata(fh)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable: {exc}"
    kv = meta.metadata or {}
    want = export.metadata(table, day)
    for name, value in want.items():
        if kv.get(name) != value:
            got = kv.get(name, b"<none>").decode(errors="replace")
            return f"{name.decode()} is {got!r}, hot has {value.decode()!r}"
    if meta.num_rows != export.rows:
        return f"file holds {meta.num_rows} rows, hot has {export.rows}"
    return None


def execute(
    p: Plan,
    hot: HotStore,
    storage: Storage,
    hook: Hook | None = None,
) -> Result:
    """Rotate the partitions of plan `p` (see the module docstring)."""
    started = time.perf_counter()
    result = Result(plan=p.to_dict())
    touched: set[str] = set()

    def step(name: str, task: DayTask) -> None:
        if hook is not None:
            hook(name, task.table, task.day)

    for task in p.tasks:
        with hot.connect() as conn:
            part = hot._ident(partition_name(task.table, task.day))
            if not hot._exists(conn, partition_name(task.table, task.day)):
                continue  # dropped by an earlier (interrupted) run after its commit
            step("export", task)
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(part))
            export = export_partition(hot, conn, task.table, task.day)
            step("write", task)
            why = cold_matches(storage, task.cold_key, export, task.table, task.day)
            if why is None:
                result.cold_reused += 1
            else:
                body = encode_cold(export, task.table, task.day)
                storage.write_bytes(task.cold_key, body)
                result.bytes_written += len(body)
                log.info("cold copy %s written (%s)", storage.uri(task.cold_key), why)
            step("verify", task)
            why = cold_matches(storage, task.cold_key, export, task.table, task.day)
            if why is not None:
                raise RotationError(
                    f"{task.table} {task.day}: cold copy {storage.uri(task.cold_key)} does not "
                    f"match after writing: {why}; the hot partition is kept"
                )
            step("drop", task)
            hot.drop_partition(conn, task.table, task.day)
            step("commit", task)
            conn.commit()
        touched.add(task.table)
        result.partitions_dropped += 1
        result.rows[task.table] = result.rows.get(task.table, 0) + export.rows
        result.rotated.append(
            {"table": task.table, "day": task.day.isoformat(), "rows": export.rows}
        )
        log.info("rotated %s %s: %d rows -> %s", task.table, task.day, export.rows, task.cold_key)
    if touched:
        step("analyze", DayTask(",".join(sorted(touched)), p.today, 0, ""))
        result.analyzed = hot.analyze(sorted(touched))
    result.seconds = time.perf_counter() - started
    return result


def today_in(tz: str) -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(tz)).date()


def rotate(
    cfg: Any,
    dsn: str,
    *,
    dry_run: bool = False,
    analyze_only: bool = False,
    force: bool = False,
    hot_days: int | None = None,
    today: date | None = None,
    hook: Hook | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """`fluxforge rotate` / the 02:00 Dagster job: returns the JSON-able plan or result."""
    from fluxforge.storage import open_storage

    if not cfg.lifecycle.enabled and not force:
        return {"skipped": "lifecycle.enabled is false (run with --force to rotate anyway)"}
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    if analyze_only:
        return {"analyzed": hot.analyze()}
    layout = Layout.of(cfg.storage.etl_output)
    p = plan(
        inventory(hot),
        today or today_in(cfg.lifecycle.timezone),
        hot_days or cfg.lifecycle.hot_days,
        layout,
    )
    if dry_run:
        return {"dry_run": True, **p.to_dict()}
    storage = storage or open_storage(cfg.storage.etl_output)
    return execute(p, hot, storage, hook).to_dict()


def read_cold(storage: Storage, layout: Layout, table: str, day: date) -> pa.Table:
    """The cold copy of one rotated day (empty when there is none)."""
    key = cold_key(layout, table, day)
    if not storage.exists(key):
        return pa.table({})
    return pq.read_table(io.BytesIO(storage.read_bytes(key)))
