"""The ingestion daemon kill -9'd in a loop while two sources write at full speed (the synthetic
market as fast as Python goes, a replay of recorded segments): after every restart the sealed
segments parse line by line, seq is contiguous per source with no duplicate, and the replay
holds every input record exactly once."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fluxforge.segments import iter_lines, parse_envelope, raw_payload
from tests.reliability.conftest import (
    daemon_cmd,
    make_synthetic_segments,
    popen,
    read_envelopes,
    ready_files,
    record_figures,
    write_config,
)

pytestmark = pytest.mark.slow

KILLS = 12


def _hot_root() -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="fluxforge-kill-", dir=shm if shm.is_dir() else None))


def _active(root: Path, source: str) -> dict[str, int]:
    folder = root / "raw" / "active" / source
    return {f.name: f.stat().st_size for f in folder.glob("segment_*")} if folder.is_dir() else {}


def _wait_writing(root: Path, source: str, proc: subprocess.Popen, before: set[str]) -> None:
    """Until the daemon appends to a segment it opened itself (it has recovered and runs)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(n not in before and size > 0 for n, size in _active(root, source).items()):
                return
        except FileNotFoundError:  # a segment sealed while we looked
            pass
        time.sleep(0.005)


def test_daemon_kill9_loop_at_full_speed_keeps_every_line_once(tmp_path: Path) -> None:
    inputs = make_synthetic_segments(tmp_path / "input", messages=20_000, max_bytes=1 << 30)
    hot = _hot_root()
    try:
        config = write_config(
            tmp_path / "daemon.yaml",
            {
                "storage": {"base_dir": str(hot), "spill_dir": str(tmp_path / "spill")},
                "sources": [
                    {"name": "syn", "type": "synthetic", "rate": 1_000_000, "seed": 3},
                    # 40 s of recorded feed at 15x: still running during most of the kills
                    {"name": "rep", "type": "replay", "path": str(inputs[0]), "speed": 15},
                ],
                "ingestion": {"segment_max_bytes": 1 << 20},
            },
        )
        rng = random.Random(7)
        kills, run_seconds = 0, 0.0
        for _ in range(KILLS):
            before = set(_active(hot, "syn"))
            proc = popen(daemon_cmd(config), stdout=subprocess.DEVNULL)
            _wait_writing(hot, "syn", proc, before)
            started = time.monotonic()
            time.sleep(rng.uniform(0.05, 0.5))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=30)
            run_seconds += time.monotonic() - started
        before = set(_active(hot, "syn"))  # no daemon runs here, so nothing moves under us
        final = popen(daemon_cmd(config), stdout=subprocess.DEVNULL)
        _wait_writing(hot, "syn", final, before)
        time.sleep(0.3)
        final.send_signal(signal.SIGTERM)
        _, err = final.communicate(timeout=60)
        assert final.returncode == 0, err.decode()[-3000:]
        assert kills >= 10

        lines = 0
        for source in ("syn", "rep"):
            assert not _active(hot, source)  # everything recovered and sealed
            envs = read_envelopes(ready_files(hot, source))  # every line parses
            assert [e.seq for e in envs] == list(range(len(envs)))  # contiguous, no duplicate
            lines += len(envs)
        syn = read_envelopes(ready_files(hot, "syn"))
        runs: list[list[int]] = []
        for env in syn:
            if env.kind == "ctl" and env.data.get("event") == "connect":
                runs.append([])
            elif env.kind == "msg":
                runs[-1].append(env.data["sequence_num"])
        assert len(runs) == KILLS + 1
        # each run's acknowledged lines are a gap-free prefix of what it generated
        assert all(seqs == list(range(len(seqs))) for seqs in runs)
        rep = read_envelopes(ready_files(hot, "rep"))
        replayed = [
            raw_payload(line)
            for p in ready_files(hot, "rep")
            for _, line in iter_lines(p.read_bytes())
            if parse_envelope(line).kind == "msg"
        ]
        expected = [
            raw_payload(line)
            for _, line in iter_lines(inputs[0].read_bytes())
            if parse_envelope(line).kind == "msg"
        ]
        # the replay resumed exactly where each kill left it: nothing twice, nothing skipped
        assert replayed == expected[: len(replayed)]
        recovered = [e for e in syn + rep if e.kind == "ctl" and e.data.get("event") == "recover"]
        record_figures(
            "daemon_kill_loop",
            {
                "kills": kills,
                "lines": lines,
                "lines_per_s": round(lines / run_seconds),
                "run_seconds": round(run_seconds, 2),
                "recovered_segments": len(recovered),
                "torn_lines_cut": sum(e.data.get("torn_lines", 0) for e in recovered),
                "replay_records": f"{len(replayed)}/{len(expected)}",
            },
        )
    finally:
        shutil.rmtree(hot, ignore_errors=True)
