"""Raw segment tiering (docs/architecture.md, "Tiering and the reader"): archived segments move hot
-> warm -> cold by age, and a manifest says where every segment is.

Tiers, all holding the same key layout (``{raw_dir}/{archive_subdir}/{source}/segment_*.ndjson``):

- ``hot``: the archive directory of the ETL input storage (usually ``/dev/shm``), where the
  refinery leaves processed segments;
- ``warm``: the local directory ``tiering.warm_dir`` (disk);
- ``cold``: the ``tiering.cold`` storage layer (S3 or another directory), when configured.

A segment's age is ``now - start of its UTC hour`` (from its name, so it is the same on every
storage). It moves to warm once older than ``warm_after_s`` and to cold once older than
``cold_after_s`` (directly from hot when it is already that old). A move is ``os.rename()`` when
both ends are on one local filesystem, else copy + fsync (or upload) + size check + delete of
the source.

The manifest is a SQLite file in the warm dir (``manifest.sqlite``): one row per segment with
(source, date, hour) -> name, tier, key, uri, size, sha256. The checksum is taken once, when a
segment is first registered (still in hot), and verified by ``read_segment``. Every move
updates the manifest *after* the file has moved; a crash in between is repaired by the next
``tier()`` run, which first re-scans every tier and reconciles: unregistered segments are
registered, rows pointing at the wrong tier are corrected, a segment found in two tiers (a
crash after the copy, before the delete) keeps the colder copy when it matches and deletes the
other, and rows whose file is nowhere are marked ``missing`` (never silently dropped).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fluxforge.config import Config
from fluxforge.segments import parse_segment_name
from fluxforge.storage import Layout, LocalStorage, Storage, StorageError, open_storage

log = logging.getLogger(__name__)

TIERS = ("hot", "warm", "cold")
MANIFEST_NAME = "manifest.sqlite"
LOCK_NAME = ".tiering.lock"

_SCHEMA = """
create table if not exists segments (
    source text not null,
    name text not null,
    date text not null,
    hour integer not null,
    tier text not null,
    key text not null,
    uri text not null,
    size integer not null,
    sha256 text not null,
    updated_at real not null,
    primary key (source, name)
);
create index if not exists segments_by_hour on segments (source, date, hour);
"""


class TieringError(RuntimeError):
    """Tiering cannot proceed; the message names the segment / tier / path."""


class ChecksumError(TieringError):
    """A segment's bytes do not match the sha256 recorded in the manifest."""


@dataclass(frozen=True)
class SegmentLocation:
    source: str
    name: str
    date: str  # YYYY-MM-DD (UTC)
    hour: int
    tier: str  # hot | warm | cold | missing
    key: str  # storage key inside the tier
    uri: str  # local path or s3://bucket/key
    size: int
    sha256: str  # "" while not registered yet (found in hot, tier() not run)


@dataclass
class TierMove:
    source: str
    name: str
    from_tier: str
    to_tier: str
    size: int
    method: str = ""  # rename | copy | upload | download (empty in a dry run)
    uri: str = ""


@dataclass
class TierReport:
    dry_run: bool
    moves: list[TierMove] = field(default_factory=list)
    registered: int = 0
    repaired: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)  # tier -> count after the run

    @property
    def bytes_moved(self) -> int:
        return sum(m.size for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "moves": [asdict(m) for m in self.moves],
            "moved": len(self.moves),
            "bytes_moved": self.bytes_moved,
            "registered": self.registered,
            "repaired": list(self.repaired),
            "missing": list(self.missing),
            "segments": dict(self.segments),
        }


# --------------------------------------------------------------------------------------------
# tiers


def resolve_warm_dir(cfg: Config) -> Path:
    """``tiering.warm_dir``, else ``warm/`` under a local lake's root (never the current
    directory implicitly: two configs must not share a manifest by accident)."""
    if cfg.tiering.warm_dir:
        return Path(cfg.tiering.warm_dir).expanduser().resolve()
    out = cfg.storage.etl_output
    if out.backend == "local":
        return Path(out.base_dir).expanduser().resolve() / "warm"
    raise ValueError(
        "tiering.warm_dir is not set and the lake (etl_storage_output) is on S3: "
        "set tiering.warm_dir to a local disk directory for the warm tier"
    )


class Tiers:
    """The three storages and their layouts, opened once."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        inp = cfg.storage.etl_input
        self.warm_dir = resolve_warm_dir(cfg)
        self.storages: dict[str, Storage] = {
            "hot": open_storage(inp),
            "warm": LocalStorage(self.warm_dir),
        }
        self.layouts: dict[str, Layout] = {"hot": Layout.of(inp), "warm": Layout.of(inp)}
        if cfg.tiering.cold is not None:
            self.storages["cold"] = open_storage(cfg.tiering.cold)
            self.layouts["cold"] = Layout.of(cfg.tiering.cold)
        hot_root = self.storages["hot"].local_path("")
        if hot_root is not None and Path(hot_root) == self.warm_dir:
            raise TieringError(
                f"tiering.warm_dir={self.warm_dir} is the ETL input storage root itself; "
                "give the warm tier its own directory"
            )

    @property
    def names(self) -> list[str]:
        return [t for t in TIERS if t in self.storages]

    def key(self, tier: str, source: str, name: str) -> str:
        return self.layouts[tier].segment("archive", source, name)

    def scan(self) -> dict[tuple[str, str], dict[str, str]]:
        """(source, name) -> {tier: key} for every archived segment in every tier."""
        found: dict[tuple[str, str], dict[str, str]] = {}
        for tier in self.names:
            prefix = self.layouts[tier].raw_sources("archive")
            for key in self.storages[tier].list(prefix, "segment_*.ndjson", recursive=True):
                parts = key.split("/")
                try:
                    parse_segment_name(parts[-1])
                except ValueError:
                    continue
                found.setdefault((parts[-2], parts[-1]), {})[tier] = key
        return found


def _sha256(storage: Storage, key: str) -> str:
    path = storage.local_path(key)
    if path is not None:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    return hashlib.sha256(storage.read_bytes(key)).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _transfer(src: Storage, src_key: str, dst: Storage, dst_key: str, size: int) -> str:
    """Move one file between tiers; returns the method used. The destination is complete
    (fsynced / uploaded, size checked) before the source is deleted."""
    src_path, dst_path = src.local_path(src_key), dst.local_path(dst_key)
    if src_path is not None and dst_path is not None:
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src_path, dst_path)
            _fsync_dir(dst_path.parent)
            return "rename"
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StorageError(f"move {src_path} -> {dst_path}: {exc.strerror}") from exc
        tmp = dst_path.with_name(f".tmp-{dst_path.name}")
        with open(src_path, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(8 * 1024 * 1024):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst_path)
        _fsync_dir(dst_path.parent)
        method = "copy"
    elif src_path is not None:
        dst.upload_file(src_path, dst_key)
        method = "upload"
    elif dst_path is not None:
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst_path.with_name(f".tmp-{dst_path.name}")
        src.download_file(src_key, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst_path)
        _fsync_dir(dst_path.parent)
        method = "download"
    else:
        dst.write_bytes(dst_key, src.read_bytes(src_key))
        method = "copy"
    got = dst.size(dst_key)
    if got != size:
        raise TieringError(
            f"{dst.uri(dst_key)}: {got} bytes after the copy, expected {size}; source kept"
        )
    src.delete(src_key)
    return method


# --------------------------------------------------------------------------------------------
# manifest


class Manifest:
    """The SQLite manifest in the warm dir."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path)
            self.conn.execute("pragma journal_mode=wal")
            self.conn.execute("pragma synchronous=full")
            self.conn.executescript(_SCHEMA)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def rows(self) -> dict[tuple[str, str], sqlite3.Row]:
        return {(r["source"], r["name"]): r for r in self.conn.execute("select * from segments")}

    def upsert(self, loc: SegmentLocation) -> None:
        with self.conn:
            self.conn.execute(
                "insert into segments (source, name, date, hour, tier, key, uri, size, sha256,"
                " updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " on conflict (source, name) do update set tier = excluded.tier,"
                " key = excluded.key, uri = excluded.uri, size = excluded.size,"
                " sha256 = excluded.sha256, updated_at = excluded.updated_at",
                (
                    loc.source,
                    loc.name,
                    loc.date,
                    loc.hour,
                    loc.tier,
                    loc.key,
                    loc.uri,
                    loc.size,
                    loc.sha256,
                    time.time(),
                ),
            )

    def find(self, source: str, date: str) -> list[SegmentLocation]:
        cur = self.conn.execute(
            "select * from segments where source = ? and date = ? order by hour, name",
            (source, date),
        )
        return [_row_location(r) for r in cur]


def _row_location(row: sqlite3.Row) -> SegmentLocation:
    return SegmentLocation(
        row["source"],
        row["name"],
        row["date"],
        row["hour"],
        row["tier"],
        row["key"],
        row["uri"],
        row["size"],
        row["sha256"],
    )


def manifest_path(cfg: Config) -> Path:
    return resolve_warm_dir(cfg) / MANIFEST_NAME


@contextlib.contextmanager
def _lock(warm_dir: Path) -> Iterator[None]:
    """One tiering run at a time (schedule and CLI may overlap)."""
    warm_dir.mkdir(parents=True, exist_ok=True)
    with open(warm_dir / LOCK_NAME, "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# the run


def _location(tiers: Tiers, source: str, name: str, tier: str, key: str, size: int, sha: str):
    seg = parse_segment_name(name)
    return SegmentLocation(
        source,
        name,
        seg.date,
        int(seg.hour[-2:]),
        tier,
        key,
        tiers.storages[tier].uri(key),
        size,
        sha,
    )


def _target_tier(cfg: Config, tiers: Tiers, name: str, now: float) -> str:
    age = now - parse_segment_name(name).start.timestamp()
    if "cold" in tiers.storages and age >= cfg.tiering.cold_after_s:
        return "cold"
    if age >= cfg.tiering.warm_after_s:
        return "warm"
    return "hot"


def _reconcile(
    tiers: Tiers,
    manifest: Manifest,
    found: dict[tuple[str, str], dict[str, str]],
    report: TierReport,
) -> dict[tuple[str, str], SegmentLocation]:
    """Make the manifest match the files; returns the current location of every segment."""
    rows = manifest.rows()
    current: dict[tuple[str, str], SegmentLocation] = {}
    for ident in sorted(found):
        source, name = ident
        where = found[ident]
        row = rows.get(ident)
        if len(where) > 1:
            where = _resolve_duplicate(tiers, ident, where, row, report)
        ((tier, key),) = where.items()
        storage = tiers.storages[tier]
        remote = storage.local_path(key) is None
        if remote and row is not None and (row["tier"], row["key"]) == (tier, key):
            # remote and where the manifest says: no HEAD request per segment on every run
            current[ident] = _row_location(row)
            continue
        size = storage.size(key)
        if row is None:
            loc = _location(tiers, source, name, tier, key, size, _sha256(storage, key))
            manifest.upsert(loc)
            report.registered += 1
        elif row["tier"] != tier or row["key"] != key or row["size"] != size:
            sha = row["sha256"] if row["size"] == size else _sha256(storage, key)
            if row["size"] != size:
                log.error(
                    "%s/%s: size %d in %s, manifest said %d", source, name, size, tier, row["size"]
                )
            loc = _location(tiers, source, name, tier, key, size, sha)
            manifest.upsert(loc)
            report.repaired.append(f"{source}/{name}: manifest {row['tier']} -> {tier}")
        else:
            loc = _row_location(row)
        current[ident] = loc
    for ident, row in sorted(rows.items()):
        if ident not in found and row["tier"] != "missing":
            log.error("%s/%s: in the manifest (%s) but in no tier", *ident, row["uri"])
            manifest.upsert(
                SegmentLocation(
                    row["source"],
                    row["name"],
                    row["date"],
                    row["hour"],
                    "missing",
                    row["key"],
                    row["uri"],
                    row["size"],
                    row["sha256"],
                )
            )
            report.missing.append(f"{ident[0]}/{ident[1]}")
        elif ident not in found:
            report.missing.append(f"{ident[0]}/{ident[1]}")
    return current


def _resolve_duplicate(
    tiers: Tiers,
    ident: tuple[str, str],
    where: dict[str, str],
    row: sqlite3.Row | None,
    report: TierReport,
) -> dict[str, str]:
    """A segment in two tiers: a move crashed after the copy. Keep the coldest copy whose
    checksum matches (the manifest's, else the hottest copy's), delete the others."""
    order = [t for t in TIERS if t in where]
    hottest = order[0]
    reference = row["sha256"] if row is not None and row["sha256"] else None
    if reference is None:
        reference = _sha256(tiers.storages[hottest], where[hottest])
    keep = hottest
    for tier in reversed(order):
        if _sha256(tiers.storages[tier], where[tier]) == reference:
            keep = tier
            break
    for tier in order:
        if tier != keep:
            tiers.storages[tier].delete(where[tier])
            report.repaired.append(
                f"{ident[0]}/{ident[1]}: duplicate in {tier} removed (kept {keep})"
            )
    return {keep: where[keep]}


def tier(
    cfg: Config,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> TierReport:
    """Reconcile the manifest with the tiers, then move every segment old enough to its tier
    (`progress` is called after each move).

    ``dry_run`` plans from a scan (and the manifest, read-only, when it exists) and changes
    nothing: no file moved, no manifest written."""
    now = time.time() if now is None else now
    tiers = Tiers(cfg)
    report = TierReport(dry_run=dry_run)
    if dry_run:
        return _plan_only(cfg, tiers, now, report)
    with _lock(tiers.warm_dir):
        manifest = Manifest(tiers.warm_dir / MANIFEST_NAME)
        try:
            current = _reconcile(tiers, manifest, tiers.scan(), report)
            for ident in sorted(current):
                loc = current[ident]
                target = _target_tier(cfg, tiers, loc.name, now)
                if TIERS.index(target) <= TIERS.index(loc.tier):
                    continue
                key = tiers.key(target, loc.source, loc.name)
                method = _transfer(
                    tiers.storages[loc.tier], loc.key, tiers.storages[target], key, loc.size
                )
                moved = _location(tiers, loc.source, loc.name, target, key, loc.size, loc.sha256)
                manifest.upsert(moved)
                current[ident] = moved
                report.moves.append(
                    TierMove(loc.source, loc.name, loc.tier, target, loc.size, method, moved.uri)
                )
                log.info(
                    "tier %s/%s: %s -> %s (%s)", loc.source, loc.name, loc.tier, target, method
                )
                if progress:
                    progress(f"{loc.source}/{loc.name} -> {target}")
            for loc in current.values():
                report.segments[loc.tier] = report.segments.get(loc.tier, 0) + 1
        finally:
            manifest.close()
    return report


def _plan_only(cfg: Config, tiers: Tiers, now: float, report: TierReport) -> TierReport:
    found = tiers.scan()
    for (source, name), where in sorted(found.items()):
        tier_now = max(where, key=TIERS.index)
        target = _target_tier(cfg, tiers, name, now)
        report.segments[tier_now] = report.segments.get(tier_now, 0) + 1
        if TIERS.index(target) > TIERS.index(tier_now):
            size = tiers.storages[tier_now].size(where[tier_now])
            uri = tiers.storages[target].uri(tiers.key(target, source, name))
            report.moves.append(TierMove(source, name, tier_now, target, size, "", uri))
    return report


# --------------------------------------------------------------------------------------------
# lookup for the backfill path


def locate(cfg: Config, source: str, date: str) -> list[SegmentLocation]:
    """Every archived raw segment of `source` on `date` (UTC, YYYY-MM-DD), in order, wherever
    it is. Segments processed but not yet registered (tier() has not run since) are found in
    the hot archive and returned with an empty sha256."""
    datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)  # ValueError names a bad date
    tiers = Tiers(cfg)
    by_name: dict[str, SegmentLocation] = {}
    path = tiers.warm_dir / MANIFEST_NAME
    if path.exists():
        manifest = Manifest(path, readonly=True)
        try:
            by_name = {loc.name: loc for loc in manifest.find(source, date)}
        finally:
            manifest.close()
    hot = tiers.storages["hot"]
    prefix = tiers.layouts["hot"].raw_state_dir("archive", source)
    for key in hot.list(prefix, "segment_*.ndjson"):
        name = key.rsplit("/", 1)[-1]
        try:
            seg = parse_segment_name(name)
        except ValueError:
            continue
        if seg.date == date and (name not in by_name or by_name[name].tier == "missing"):
            sha = by_name[name].sha256 if name in by_name else ""
            by_name[name] = _location(tiers, source, name, "hot", key, hot.size(key), sha)
    return sorted(by_name.values(), key=lambda loc: (loc.hour, parse_segment_name(loc.name)))


def read_segment(cfg: Config, loc: SegmentLocation) -> bytes:
    """The bytes of a located segment, checked against its manifest sha256 when it has one."""
    tiers = Tiers(cfg)
    if loc.tier not in tiers.storages:
        raise TieringError(
            f"{loc.source}/{loc.name}: tier {loc.tier!r} is not available "
            f"(configured: {tiers.names}); last known at {loc.uri}"
        )
    data = tiers.storages[loc.tier].read_bytes(loc.key)
    if loc.sha256 and hashlib.sha256(data).hexdigest() != loc.sha256:
        raise ChecksumError(
            f"{loc.source}/{loc.name} at {loc.uri}: sha256 differs from the manifest"
        )
    return data


def restore(cfg: Config, source: str, date: str) -> list[SegmentLocation]:
    """Copy every segment of `source` on `date` that is no longer in the hot archive back into
    it (checksum verified), so ``refinery.rebuild(cfg, source, date)`` finds the whole day.

    The warm/cold copy and its manifest row stay as they are; the next ``tier()`` run sees the
    segment in two tiers and, the colder copy matching its checksum, removes the hot one.
    Returns the locations of the day (the hot copies)."""
    tiers = Tiers(cfg)
    hot = tiers.storages["hot"]
    out = []
    for loc in locate(cfg, source, date):
        key = tiers.key("hot", loc.source, loc.name)
        if loc.tier != "hot":
            data = read_segment(cfg, loc)
            hot.write_bytes(key, data)
            log.info("restored %s/%s from %s to the hot archive", loc.source, loc.name, loc.tier)
        out.append(_location(tiers, loc.source, loc.name, "hot", key, loc.size, loc.sha256))
    return out
