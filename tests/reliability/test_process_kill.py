"""`fluxforge process` SIGKILLed at random moments of a multi-segment run, then re-run: every
lake table commits exactly the files of a clean run (same names, same bytes: names carry a
content hash), after EACH kill no table holds part of a segment (a segment's files of a table
are all committed or none), every segment ends in archive/, none is published twice."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from delta_fixture import committed_files

from fluxforge import lake
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage
from fluxforge.tables import REFINERY_TABLES
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

_SEGMENT = re.compile(r"(segment_\d{8}T\d{2}_\d+)")


def _committed(root: Path) -> dict[str, dict[str, set[str]]]:
    """table -> segment -> the names of its committed files (read from the Delta logs)."""
    out: dict[str, dict[str, set[str]]] = {}
    for table in REFINERY_TABLES:
        by_segment: dict[str, set[str]] = {}
        for key in lake.list_parts(LocalStorage(root), table):
            name = key.rsplit("/", 1)[-1]
            match = _SEGMENT.search(name)
            assert match, name
            by_segment.setdefault(match.group(1), set()).add(key)
        out[table] = by_segment
    return out


def _lake(root: Path) -> dict[str, bytes]:
    """The committed data files plus the refinery's per-segment state (book checkpoints,
    manifests). Files staged by a killed attempt but never committed are invisible to readers
    (not in any table's log) and are left out, as are hidden ``.tmp-*`` files."""
    out = committed_files(root)
    for sub in ("books", "segments"):
        out.update({f"state/{sub}/{k}": v for k, v in tree_bytes(root / "state" / sub).items()})
    return {k: v for k, v in out.items() if not k.rsplit("/", 1)[-1].startswith(".tmp-")}


def _torn_segments(state: dict[str, dict[str, set[str]]], clean: dict) -> list[str]:
    """(table, segment) pairs whose committed files are neither none nor all of the clean
    run's: a table holding part of a segment."""
    torn = []
    for table, segments in state.items():
        for segment, files in segments.items():
            if files != clean[table].get(segment, set()):
                torn.append(
                    f"{table}:{segment}: {len(files)} of {len(clean[table].get(segment, ()))}"
                )
    return torn


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
    clean_committed = _committed(clean_root)
    torn_after_kills: list[str] = []

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
        # the committed state right after the kill, before any repair
        torn_after_kills += _torn_segments(_committed(killed_root), clean_committed)
        stranded.append(len(ready_files(killed_root, "syn", "processing")))
        archived_after.append(len(ready_files(killed_root, "syn", "archive")))
    final = popen([*fluxforge_cmd("process", "--recover", "--json", "--config", str(config))])
    _out, err = final.communicate(timeout=180)
    runs += 1
    assert final.returncode == 0, err.decode()[-3000:]

    archived = [p.name for p in ready_files(killed_root, "syn", "archive")]
    assert archived == names  # every segment ends in archive/
    assert not ready_files(killed_root, "syn") and not ready_files(killed_root, "syn", "processing")
    assert torn_after_kills == []
    killed = _lake(killed_root)
    assert killed.keys() == clean.keys()
    assert killed == clean  # byte-identical committed files: nothing lost, no duplicate rows
    for table in REFINERY_TABLES:
        assert (
            lake.read_table(LocalStorage(killed_root), table).num_rows
            == lake.read_table(LocalStorage(clean_root), table).num_rows
        ), table
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
            "torn_segments_seen_after_kills": len(torn_after_kills),
            "tmp_files_left_by_kills": len(leftovers),
        },
    )
