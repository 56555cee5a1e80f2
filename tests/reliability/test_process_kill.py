"""`fluxforge process` SIGKILLed at random moments of a multi-segment run, then re-run: the lake
is byte-identical to a clean run, every segment ends in archive/, none is processed twice into
duplicate rows."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage
from tests.reliability.conftest import (
    fluxforge_cmd,
    load,
    make_synthetic_segments,
    popen,
    ready_files,
    record_figures,
    tree_bytes,
    write_config,
)

pytestmark = pytest.mark.slow

KILLS = 4


def _lake(root: Path) -> dict[str, bytes]:
    """Parquet parts plus the refinery's per-segment state (book checkpoints, manifests).

    Hidden ``.tmp-*`` files (an atomic write cut by the kill before its rename) are left out:
    storage listings and Parquet readers ignore them; they are counted separately."""
    out = {f"processed/{k}": v for k, v in tree_bytes(root / "processed").items()}
    for sub in ("books", "segments"):
        out.update({f"state/{sub}/{k}": v for k, v in tree_bytes(root / "state" / sub).items()})
    return {k: v for k, v in out.items() if not k.rsplit("/", 1)[-1].startswith(".tmp-")}


def _wait_archived(root: Path, proc: subprocess.Popen, count: int, timeout: float = 90) -> bool:
    """Until the run has claimed segments and `count` of them are in archive/."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        claimed = ready_files(root, "syn", "processing")
        if claimed and len(ready_files(root, "syn", "archive")) >= count:
            return True
        time.sleep(0.01)
    return False


def test_process_killed_mid_run_then_rerun_gives_clean_run_lake(tmp_path: Path) -> None:
    inputs = make_synthetic_segments(tmp_path / "input", messages=5000, max_bytes=150_000)
    names = [p.name for p in inputs]
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    for root in (clean_root, killed_root):
        shutil.copytree(tmp_path / "input" / "raw", root / "raw")
    assert process_ready(load({"storage": {"base_dir": str(clean_root)}})).failed == []
    clean = _lake(clean_root)

    config = write_config(tmp_path / "killed.yaml", {"storage": {"base_dir": str(killed_root)}})
    rng = random.Random(20261125)
    kills, runs, stranded, archived_after = 0, 0, [], []
    for _ in range(KILLS):
        done = len(ready_files(killed_root, "syn", "archive"))
        proc = popen(
            [*fluxforge_cmd("process", "--recover", "--config", str(config))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs += 1
        # after 0..3 more finished segments, somewhere inside the next one (or its writes)
        if _wait_archived(killed_root, proc, done + rng.randint(0, 3)):
            time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        stranded.append(len(ready_files(killed_root, "syn", "processing")))
        archived_after.append(len(ready_files(killed_root, "syn", "archive")))
    final = popen([*fluxforge_cmd("process", "--recover", "--json", "--config", str(config))])
    _out, err = final.communicate(timeout=180)
    runs += 1
    assert final.returncode == 0, err.decode()[-3000:]

    archived = [p.name for p in ready_files(killed_root, "syn", "archive")]
    assert archived == names  # every segment ends in archive/
    assert not ready_files(killed_root, "syn") and not ready_files(killed_root, "syn", "processing")
    killed = _lake(killed_root)
    assert killed.keys() == clean.keys()
    assert killed == clean  # byte-identical parts: nothing lost, no duplicate rows
    leftovers = list(killed_root.rglob(".tmp-*"))
    storage = LocalStorage(killed_root)
    assert not [k for k in storage.list("", recursive=True) if "/.tmp-" in k]
    assert kills >= KILLS - 1
    record_figures(
        "process_kill",
        {
            "segments": len(names),
            "kills": kills,
            "runs": runs,
            "left_in_processing_after_each_kill": stranded,
            "archived_after_each_kill": archived_after,
            "lake_files_compared": len(clean),
            "tmp_files_left_by_kills": len(leftovers),
        },
    )
