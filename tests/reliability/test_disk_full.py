"""/dev/shm and disk full, on real tiny filesystems (tmpfs mounted for the test; skipped when
mounting is not allowed).

- the daemon's hot zone passes its fill threshold, or runs out of space mid-segment: new
  segments spill to the disk directory, loudly; every line is kept exactly once;
- hot zone AND spill disk full: a clear error; lines acknowledged before stay intact, and once
  space is back a restart completes the input with every record exactly once;
- the refinery's output storage full: the segment goes back to ready/ (not stuck in
  processing/), no torn file is visible, and a retry with space gives the clean run's lake.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from delta_fixture import committed_files

from fluxforge.refinery import list_segments, process_ready
from fluxforge.segments import iter_lines, parse_envelope, raw_payload
from tests.reliability.conftest import (
    daemon_cmd,
    load,
    make_synthetic_segments,
    popen,
    read_envelopes,
    ready_files,
    record_figures,
    write_config,
)

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tiny_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs at {path} (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _msgs(files: list[Path]) -> list[bytes]:
    return [
        raw_payload(line)
        for p in files
        for _, line in iter_lines(p.read_bytes())
        if parse_envelope(line).kind == "msg"
    ]


def _daemon_config(tmp: Path, hot: Path, spill: Path, inputs: list[Path], **ing) -> Path:
    return write_config(
        tmp / "daemon.yaml",
        {
            "storage": {
                "base_dir": str(hot),
                "spill_dir": str(spill),
                "shm_fill_threshold": ing.pop("threshold", 0.8),
            },
            "sources": [{"name": "rep", "type": "replay", "path": str(inputs[0]), "speed": 0}],
            "ingestion": {"flush_max_lines": 200, **ing},
        },
    )


def _all_ready(hot: Path, spill: Path) -> list[Path]:
    files = ready_files(hot, "rep") + ready_files(spill, "rep")
    return sorted(files, key=lambda p: p.name)  # names sort in write order across both roots


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One ~4.5 MB recorded segment to replay."""
    return make_synthetic_segments(tmp_path_factory.mktemp("feed"), messages=12_000)


@pytest.mark.parametrize(
    ("case", "threshold", "segment_bytes"),
    [("past_threshold", 0.5, 256 * 1024), ("no_space_mid_segment", 1.0, 8 << 20)],
)
def test_disk_full_hot_zone_spills_to_disk_and_keeps_every_line(
    tmp_path: Path, feed: list[Path], case: str, threshold: float, segment_bytes: int
) -> None:
    spill = tmp_path / "spill"
    with tiny_fs(tmp_path / "shm", "2m") as hot:
        config = _daemon_config(
            tmp_path, hot, spill, feed, threshold=threshold, segment_max_bytes=segment_bytes
        )
        proc = popen(daemon_cmd(config, "--max-seconds", "60"))
        _, err = proc.communicate(timeout=90)
        log = err.decode(errors="replace")
        assert proc.returncode == 0, log[-3000:]
        assert "SPILLING" in log or "NO SPACE LEFT" in log  # loud
        files = _all_ready(hot, spill)
        assert ready_files(hot, "rep") and ready_files(spill, "rep")
        envs = read_envelopes(files)
        assert [e.seq for e in envs] == list(range(len(envs)))
        assert _msgs(files) == _msgs(feed)  # every record exactly once, in order
        record_figures(
            f"disk_full_{case}",
            {
                "segments_hot": len(ready_files(hot, "rep")),
                "segments_spilled": len(ready_files(spill, "rep")),
                "lines": len(envs),
                "error_lines_logged": log.count(" ERROR "),
            },
        )


def test_disk_full_hot_and_spill_full_clear_error_then_restart_loses_nothing(
    tmp_path: Path, feed: list[Path]
) -> None:
    with tiny_fs(tmp_path / "shm", "1m") as hot, tiny_fs(tmp_path / "spill", "1m") as spill:
        config = _daemon_config(
            tmp_path, hot, spill, feed, threshold=0.5, segment_max_bytes=256 * 1024
        )
        proc = popen(daemon_cmd(config, "--max-seconds", "10"))
        _, err = proc.communicate(timeout=60)
        log = err.decode(errors="replace")
        first_rc = proc.returncode
        # a clear error, and a non-zero exit instead of sealing lines it could not write
        assert "NO SPACE LEFT" in log and first_rc != 0, log[-3000:]
        # what was acknowledged before is intact: sealed lines parse, seq has no gap or dup
        sealed = read_envelopes(_all_ready(hot, spill))
        assert [e.seq for e in sealed] == list(range(len(sealed)))
        acknowledged = len(sealed)
        # space comes back: a restart recovers what was left active and completes the input
        _resize(hot, "16m")
        _resize(spill, "16m")
        proc = popen(daemon_cmd(config, "--max-seconds", "60"))
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        files = _all_ready(hot, spill)
        envs = read_envelopes(files)
        assert [e.seq for e in envs] == list(range(len(envs)))
        assert _msgs(files) == _msgs(feed)
        record_figures(
            "disk_full_everything",
            {
                "first_run_exit": first_rc,
                "lines_sealed_while_full": acknowledged,
                "lines_after_restart": len(envs),
            },
        )


def test_disk_full_refinery_output_segment_back_to_ready_and_retry_is_clean(
    tmp_path: Path, synthetic_input: list[Path]
) -> None:
    clean_root = tmp_path / "clean"
    shutil.copytree(synthetic_input[0].parents[3] / "raw", clean_root / "raw")
    assert process_ready(load({"storage": {"base_dir": str(clean_root)}})).failed == []
    clean = committed_files(clean_root)

    inp = tmp_path / "in"
    shutil.copytree(synthetic_input[0].parents[3] / "raw", inp / "raw")
    with tiny_fs(tmp_path / "out", "160k") as out:
        layers = {
            "etl_storage_input": {"base_dir": str(inp)},
            "etl_storage_output": {"base_dir": str(out)},
        }
        cfg = load({"storage": layers})
        report = process_ready(cfg)
        assert report.failed and "No space left" in report.failed[0]["error"]
        assert report.failed[0]["moved_to"] == "ready"
        assert list_segments(cfg, "processing") == []  # nothing stuck claimed
        waiting = list_segments(cfg, "ready")
        assert len(waiting) + len(report.segments) == len(synthetic_input)
        visible = sorted((out / "processed").rglob("*.parquet"))
        for part in visible:  # whatever is visible is whole (atomic writes)
            pq.read_metadata(part)
        assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
        failed_segment = report.failed[0]["segment"].split("/")[-1].removesuffix(".ndjson")
        # a table holds all of the failed segment's files or none (one commit per table)
        half = [k for k in committed_files(out) if failed_segment in k]
        _resize(out, "16m")
        retry = process_ready(cfg)
        assert retry.failed == []
        assert committed_files(out) == clean  # the committed files (names carry a content hash)
        assert len(list_segments(cfg, "archive")) == len(synthetic_input)
        record_figures(
            "disk_full_refinery_output",
            {
                "processed_before_full": len(report.segments),
                "back_to_ready": len(waiting),
                "failed_segment_parts_visible_until_retry": len(half),
            },
        )
