"""Issue cases 2 and 3: segment names and ``seq`` are never reused, and one daemon per source
and store.

Case 2: losing the daemon's ``state_dir`` made it count from segment 1 again, reusing the names
of segments already processed (archive/, failed/, processing/) or tiered (warm dir, manifest):
``process`` then renamed over archived raw files and ``tier`` deleted the new ones as
duplicates. Now the counters come from every tier.

Case 3: a second daemon on the same storage "recovered" the first one's live active segment and
both kept writing (duplicate seq). Now the second exits non-zero at once, touching nothing."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fluxforge.config import SourceConfig, config_from_dict
from fluxforge.segments import parse_segment_name
from ingestion_daemon.sources.synthetic import SyntheticSource
from ingestion_daemon.writer import SegmentWriter
from tests.reliability.conftest import (
    StepClock,
    daemon_cmd,
    popen,
    read_envelopes,
    ready_files,
    record_figures,
    write_config,
)


def _write(cfg, messages: int, start_ns: int) -> list[str]:
    writer = SegmentWriter(cfg, "syn", default_ex="coinbase", live=False, clock=StepClock(start_ns))
    writer.open()
    src = SourceConfig(name="syn", type="synthetic", rate=1e9, seed=5, max_messages=messages)
    asyncio.run(SyntheticSource(src, cfg).run(writer, asyncio.Event()))
    writer.close()
    return writer.sealed


def _all_segments(root: Path) -> dict[str, Path]:
    return {p.name: p for p in root.rglob("segment_*.ndjson")}


def test_names_and_seq_not_reused_after_state_dir_lost(tmp_path: Path) -> None:
    root, state, warm = tmp_path / "store", tmp_path / "state", tmp_path / "warm"
    cfg = config_from_dict(
        {
            "storage": {"base_dir": str(root)},
            "ingestion": {
                "segment_max_bytes": 60_000,
                "flush_max_lines": 500,
                "state_dir": str(state),
            },
            "tiering": {"warm_dir": str(warm)},
        },
        environ={},
    )
    t0 = 1_704_164_400 * 1_000_000_000
    first = _write(cfg, 3000, t0)
    assert len(first) >= 5
    old = read_envelopes(ready_files(root, "syn"))
    # the refinery and tiering moved them on: processed, failed, one still claimed, and the
    # oldest ones tiered to the warm dir
    raw = root / "raw"
    places = ["warm", "warm", "archive", "failed", "processing"]
    for name, place in zip(sorted(first), places, strict=False):
        base = warm / "raw" / "archive" if place == "warm" else raw / place
        (base / "syn").mkdir(parents=True, exist_ok=True)
        shutil.move(raw / "ready" / "syn" / name, base / "syn" / name)
    shutil.rmtree(state)  # the daemon's state is lost

    second = _write(cfg, 500, t0 + 3_600_000_000_000)
    assert second and not set(second) & set(first), "a segment name was reused"
    old_counters = {parse_segment_name(n).counter for n in first}
    assert min(parse_segment_name(n).counter for n in second) > max(old_counters)
    old_seqs = {e.seq for e in old}
    new_seqs = [e.seq for e in read_envelopes([raw / "ready" / "syn" / n for n in second])]
    assert not old_seqs & set(new_seqs), "a seq was reused"
    assert min(new_seqs) == max(old_seqs) + 1  # monotonic, no gap
    assert len(_all_segments(tmp_path)) == len(first) + len(second)  # nothing overwritten
    record_figures(
        "names_never_reused",
        {
            "segments_before": len(first),
            "segments_after_state_loss": len(second),
            "reused_names": 0,
            "reused_seqs": 0,
            "first_new_seq": min(new_seqs),
        },
    )


def test_names_second_daemon_on_same_store_exits_at_once_touching_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    config = write_config(
        tmp_path / "d.yaml",
        {
            "storage": {"base_dir": str(root)},
            "sources": [{"name": "syn", "type": "synthetic", "rate": 2000, "seed": 3}],
            "ingestion": {"segment_max_bytes": 1 << 30},
        },
    )
    first = popen(daemon_cmd(config), stdout=subprocess.DEVNULL)
    try:
        active = root / "raw" / "active" / "syn"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            f.stat().st_size for f in active.glob("segment_*")
        ):
            assert first.poll() is None, first.stderr.read().decode()
            time.sleep(0.05)
        live = sorted(active.glob("segment_*"))
        assert len(live) == 1
        started = time.monotonic()
        second = subprocess.run(
            daemon_cmd(config, "--max-seconds", "5"), capture_output=True, text=True, timeout=60
        )
        took = time.monotonic() - started
        assert second.returncode != 0 and took < 30  # at once: before any intake
        assert f"pid {first.pid}" in second.stderr and "already running" in second.stderr
        # the live segment was not "recovered" (sealed) by the second one
        assert live[0].exists() and not list((root / "raw" / "ready" / "syn").glob("*"))
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == 0
    envs = read_envelopes(ready_files(root, "syn"))
    seqs = [e.seq for e in envs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # contiguous, no duplicate
    record_figures(
        "one_daemon_per_store",
        {
            "second_exit_code": second.returncode,
            "second_exit_s": round(took, 2),
            "lines": len(seqs),
        },
    )


def test_names_daemon_refuses_to_start_when_counters_unknowable(tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "manifest.sqlite").write_bytes(b"this is not a sqlite database" * 100)
    cfg = config_from_dict(
        {"storage": {"base_dir": str(tmp_path / "store")}, "tiering": {"warm_dir": str(warm)}},
        environ={},
    )
    writer = SegmentWriter(cfg, "syn", live=False)
    with pytest.raises(OSError, match="manifest"):
        writer.open()
    assert not (tmp_path / "store" / "raw" / "active").exists()


def test_names_second_up_on_same_data_dir_exits_at_once(tmp_path: Path) -> None:
    """`fluxforge up` per data dir: a second one (while the first holds the data dir) exits
    non-zero naming the holder, before starting a daemon, Dagster or PostgreSQL."""
    import sys

    from fluxforge.locks import up_lock_path

    data = tmp_path / "data"
    config = write_config(tmp_path / "up.yaml", {"storage": {"base_dir": str(data)}})
    lock = up_lock_path(data.resolve())
    holder = popen(
        [
            sys.executable,
            "-c",
            "import time; from fluxforge.locks import exclusive\n"
            f"with exclusive({str(lock)!r}, 'fluxforge up', 'fluxforge up'):\n"
            "    print('up', flush=True); time.sleep(120)",
        ]
    )
    try:
        assert holder.stdout.readline().strip() == b"up"
        second = subprocess.run(
            [sys.executable, "-m", "fluxforge.cli", "up", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
        assert not (data / "dagster_home").exists()  # touched nothing
    finally:
        holder.kill()
        holder.wait(timeout=30)
