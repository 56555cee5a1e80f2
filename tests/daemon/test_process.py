"""The daemon as a real process: SIGTERM seals and exits 0; kill -9 at random moments loses and
duplicates nothing once restarted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from fluxforge.segments import SegmentTailer, is_own_ctl, parse_envelope, parse_segment_name

from .conftest import read_envelopes, ready_files

REPO = Path(__file__).resolve().parents[2]


def _write_config(tmp_path: Path, sources: list[dict], **ingestion) -> Path:
    cfg = {
        "storage": {
            "base_dir": str(tmp_path / "hot"),
            "spill_dir": str(tmp_path / "spill"),
            "shm_fill_threshold": 1.0,
        },
        "sources": sources,
        "ingestion": {"segment_max_bytes": 32768, "flush_max_lines": 20, **ingestion},
    }
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(config: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "ingestion_daemon", "--config", str(config), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for_active(
    root: Path, source: str, proc: subprocess.Popen, before: set[str], timeout: float = 30
) -> None:
    """Until the daemon writes into a segment that was not there before it started (so it has
    recovered and is appending)."""
    active = root / "raw" / "active" / source
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for f in active.glob("segment_*") if active.is_dir() else []:
            try:
                size = f.stat().st_size
            except FileNotFoundError:  # sealed (renamed to ready/) between glob and stat
                continue
            if f.name not in before and size > 0:
                return
        time.sleep(0.01)


def _active_names(root: Path, source: str) -> set[str]:
    return {f.name for f in (root / "raw" / "active" / source).glob("segment_*")}


def _written_active(root: Path, source: str) -> int:
    """How many open segments hold at least one whole line."""
    return sum(
        b"\n" in f.read_bytes() for f in (root / "raw" / "active" / source).glob("segment_*")
    )


def _generate_capture(path: Path, frames: int) -> None:
    """A cryptofeed-format capture: open line, one sent line, `frames` received frames 50 ms apart
    (so the input spans several UTC hours and hour rotation happens too)."""
    t0 = 1_700_000_000.0
    url = "wss://ws-feed.example"
    with path.open("w") as fh:
        fh.write(f"{url} <-> {t0:.6f}\n")
        fh.write(f'{url} <- {t0:.6f}: {{"type":"subscribe","channels":["level2"]}}\n')
        for i in range(frames):
            ts = t0 + 0.001 + i * 0.05
            frame = {
                "type": "l2update",
                "product_id": "BTC-USD",
                "i": i,
                "changes": [["buy", f"{100 + i % 50}.25", "0.5"]],
                "pad": "x" * (i % 40),
            }
            fh.write(f"{ts:.6f}: {orjson.dumps(frame).decode()}\n")


@pytest.mark.slow
def test_daemon_kill9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path):
    frames = 120_000
    capture = tmp_path / "input" / "COINBASE.ws.1.0"
    capture.parent.mkdir()
    _generate_capture(capture, frames)
    # 120k frames over 6000 s of capture time at speed 500: ~12 s of sustained ~10k msg/s
    config = _write_config(
        tmp_path, [{"name": "rep", "type": "replay", "path": str(capture), "speed": 500}]
    )
    hot = tmp_path / "hot"
    rng = random.Random(20261125)
    kills = mid_segment = 0
    # a kill can also land between a seal and the next open, leaving nothing to recover, so
    # the loop goes on until two kills have left a written segment open (bounded, and the
    # input outlasts the bound)
    for _ in range(25):
        if kills >= 5 and mid_segment >= 2:
            break
        before = _active_names(hot, "rep")
        proc = _start(config)
        _wait_for_active(hot, "rep", proc, before)
        time.sleep(rng.uniform(0.05, 0.4))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        mid_segment += _written_active(hot, "rep") > 0
    final = _start(config)
    _, err = final.communicate(timeout=240)
    assert final.returncode == 0, err.decode()[-3000:]
    assert kills >= 5 and mid_segment >= 2, (kills, mid_segment)

    assert not list((hot / "raw" / "active" / "rep").glob("segment_*"))
    envs = read_envelopes(ready_files(hot, "rep"))  # every line parses
    assert [e.seq for e in envs] == list(range(len(envs)))  # contiguous, no duplicate
    feed = [e for e in envs if not is_own_ctl(e)]
    assert [e.data["i"] for e in feed if e.kind == "msg"] == list(range(frames))
    assert [e.data["event"] for e in feed if e.kind == "ctl"] == ["connect", "subscribe"]
    for f in ready_files(hot, "rep"):  # hour rotation: each segment holds one UTC hour
        start = int(parse_segment_name(f.name).start.timestamp()) * 1_000_000_000
        assert all(start <= e.ts < start + 3_600_000_000_000 for e in read_envelopes([f]))
    recovered = [e for e in envs if is_own_ctl(e) and e.data["event"] == "recover"]
    assert len(recovered) >= mid_segment
    # a restart after the end of the input writes nothing new
    again = _start(config)
    again.communicate(timeout=60)
    assert again.returncode == 0
    assert len(read_envelopes(ready_files(hot, "rep"))) == len(envs)


def test_daemon_sigterm_seals_everything_and_exits_0(tmp_path: Path):
    config = _write_config(
        tmp_path, [{"name": "syn", "type": "synthetic", "rate": 5000, "seed": 7}]
    )
    proc = _start(config)
    _wait_for_active(tmp_path / "hot", "syn", proc, set())
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b"sealed" in err
    assert not list((tmp_path / "hot" / "raw" / "active" / "syn").glob("segment_*"))
    envs = read_envelopes(ready_files(tmp_path / "hot", "syn"))
    assert [e.seq for e in envs] == list(range(len(envs)))
    msgs = [e.data["sequence_num"] for e in envs if e.kind == "msg"]
    assert msgs == list(range(len(msgs))) and len(msgs) > 10
    # the last segment ends with its seal record (reason "shutdown", or "size" when the last
    # line before the signal happened to fill it)
    assert envs[-1].kind == "ctl" and envs[-1].data["event"] == "seal"


def test_tailer_in_another_process_reads_the_live_feed_in_order(tmp_path: Path):
    config = _write_config(
        tmp_path, [{"name": "syn", "type": "synthetic", "rate": 3000, "seed": 11}]
    )
    hot = tmp_path / "hot"
    proc = _start(config)
    try:
        _wait_for_active(hot, "syn", proc, set())
        tailer = SegmentTailer(hot, "syn")
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 2000 and time.monotonic() < deadline and proc.poll() is None:
            got += tailer.poll()
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert len(got) >= 2000
    tailed = [parse_envelope(line) for line in got]
    sealed = read_envelopes(ready_files(hot, "syn"))
    # it starts at the segment active when it was created and then misses nothing
    first = tailed[0].seq
    assert [e.seq for e in tailed] == list(range(first, first + len(tailed)))
    by_seq = {e.seq: e for e in sealed}
    assert all(by_seq[e.seq].data == e.data for e in tailed)
    assert len(ready_files(hot, "syn")) > 3
