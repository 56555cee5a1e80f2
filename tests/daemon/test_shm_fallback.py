"""Where the shared-memory directory does not exist (macOS has no /dev/shm), the layers placed
in it move to the temp dir with one warning, and the daemon seals its segments there."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest

from ingestion_daemon.service import run_daemon

from .conftest import make_config, ready_files


def test_daemon_without_shm_writes_segments_under_the_temp_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    shm = tmp_path / "no-shm"  # never created
    source = {"name": "synthetic", "type": "synthetic", "max_messages": 200, "rate": 5000}
    with caplog.at_level(logging.WARNING, logger="fluxforge.config"):
        cfg = make_config(
            tmp_path, [source], storage={"shm_dir": str(shm), "base_dir": f"{shm}/fluxforge"}
        )
    moved = tmp_path / "tmp" / "fluxforge-shm" / "fluxforge"
    assert cfg.storage.ingestion.base_dir == cfg.storage.etl_input.base_dir == str(moved)
    assert [r.getMessage() for r in caplog.records] == [
        f"{shm} does not exist (no shared memory here): {shm}/fluxforge is placed at {moved} "
        "instead"
    ]
    assert run_daemon(cfg, max_seconds=10) == 0
    assert ready_files(moved, "synthetic") and not shm.exists()


def test_existing_shm_dir_is_used_as_configured(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    cfg = make_config(tmp_path, storage={"shm_dir": str(shm), "base_dir": f"{shm}/fluxforge"})
    assert cfg.storage.ingestion.base_dir == f"{shm}/fluxforge"
