"""Issue case 9: symlinks never lead FluxForge outside its roots.

Before: a symlink in ``raw/ready/`` put the lines of a system file (the password database) into
the quarantine table, and a symlinked table directory received files outside the lake root.
Now listings skip symlinks (segment discovery never sees them), every local path is resolved
and must stay inside the root, and the daemon never writes through a link in active/."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from fluxforge.config import config_from_dict
from fluxforge.refinery import list_segments, process_ready
from fluxforge.storage import LocalStorage, StorageError
from ingestion_daemon.writer import SegmentWriter
from tests.reliability.conftest import record_figures

SECRET_LINE = b"root:x:0:0:root:/root:/bin/bash\n"


def test_symlinks_in_ready_not_discovered_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "passwd"
    outside.parent.mkdir()
    outside.write_bytes(SECRET_LINE * 50)
    root = tmp_path / "store"
    ready = root / "raw" / "ready" / "syn"
    ready.mkdir(parents=True)
    os.symlink(outside, ready / "segment_20240102T03_00001.ndjson")
    os.symlink(outside, root / "raw" / "ready" / "segment_20240102T03_00002.ndjson")
    cfg = config_from_dict({"storage": {"base_dir": str(root)}}, environ={})
    assert list_segments(cfg, "ready") == []
    report = process_ready(cfg)
    assert report.segments == [] and not report.failed
    store = LocalStorage(root)
    with pytest.raises(StorageError, match="symlink"):
        store.read_bytes("raw/ready/syn/segment_20240102T03_00001.ndjson")
    # nothing of the outside file reached the lake (the quarantine table included)
    lake = root / "processed"
    leaked = [p for p in lake.rglob("*") if p.is_file() and b"root:x:0" in p.read_bytes()]
    assert leaked == []
    assert outside.read_bytes() == SECRET_LINE * 50  # untouched, not moved
    record_figures("symlinks_ready", {"planted": 2, "discovered": 0, "read": 0})


def test_symlinked_directory_inside_root_refused_for_writes(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "lake"
    (root / "processed").mkdir(parents=True)
    os.symlink(outside, root / "processed" / "trades")
    store = LocalStorage(root)
    with pytest.raises(StorageError, match="outside the storage root"):
        store.write_bytes("processed/trades/exchange=x/part-1.parquet", b"PAR1")
    with pytest.raises(StorageError, match="outside the storage root"):
        store.upload_file(__file__, "processed/trades/y.parquet")
    assert store.list("processed", recursive=True) == []
    assert list(outside.iterdir()) == []


def test_symlinks_daemon_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    root = tmp_path / "store"
    active = root / "raw" / "active" / "syn"
    active.mkdir(parents=True)
    cfg = config_from_dict({"storage": {"base_dir": str(root)}}, environ={})
    writer = SegmentWriter(cfg, "syn", live=False)
    # the link has the name the writer will pick next
    os.symlink(victim, active / "segment_20240102T03_00001.ndjson")
    writer.open()
    with contextlib.suppress(OSError):  # refusing to write is fine; writing through is not
        writer.append(1_704_164_400 * 1_000_000_000, b'{"x":1}')
        writer.flush()
    with contextlib.suppress(OSError):
        writer.close()
    assert victim.read_bytes() == b"precious\n"
