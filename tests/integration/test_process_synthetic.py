"""`process` on the embedded default feed: the daemon's synthetic source (Coinbase Advanced
Trade shapes) for a few seconds, then the refinery with the columnar fast path and with the
per-line path: the same lake, byte for byte; every line accounted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fluxforge import demux, lake
from fluxforge.config import load_config
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage

pytestmark = pytest.mark.slow


def _ingest(root: Path) -> Path:
    cfg = {
        "storage": {"backend": "local", "base_dir": str(root / "data")},
        "sources": [
            {
                "name": "synthetic",
                "type": "synthetic",
                "symbols": ["BTC-USD", "ETH-USD"],
                "rate": 1500,
                "seed": 7,
            }
        ],
        "ingestion": {"segment_max_age_s": 1.5},
    }
    path = root / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fluxforge.cli",
            "ingest",
            "--config",
            str(path),
            "--max-seconds",
            "3",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


def _lake(root: Path) -> dict[str, bytes]:
    base = root / "data" / "processed"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.parquet"))}


def test_process_synthetic_fast_path_equals_per_line_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_root, slow_root = tmp_path / "fast", tmp_path / "slow"
    fast_root.mkdir()
    cfg_fast = _ingest(fast_root)
    ready = fast_root / "data" / "raw" / "ready"
    assert len(list(ready.rglob("segment_*.ndjson"))) >= 2
    shutil.copytree(ready, slow_root / "data" / "raw" / "ready")
    cfg_slow = slow_root / "fluxforge.yaml"
    cfg_slow.write_text(cfg_fast.read_text().replace(str(fast_root), str(slow_root)))

    report = process_ready(load_config(cfg_fast, environ={}))
    assert report.failed == [] and report.quarantined == 0
    assert report.lines == report.data + report.control
    assert report.rows["book_deltas"] > 1000 and report.trades > 0
    monkeypatch.setattr(demux, "FAST_PATH", False)
    assert process_ready(load_config(cfg_slow, environ={})).failed == []
    assert _lake(fast_root) == _lake(slow_root)
    books = lake.read_table(LocalStorage(fast_root / "data"), "book_snapshots")
    assert set(books.column("symbol").to_pylist()) == {"BTC-USD", "ETH-USD"}
