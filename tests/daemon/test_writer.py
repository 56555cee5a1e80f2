"""SegmentWriter: rotation, sealing, recovery, spill, state across restarts."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from fluxforge.segments import SegmentTailer, is_own_ctl, parse_segment_name
from ingestion_daemon.writer import HOUR_NS, SegmentWriter

from .conftest import read_envelopes, ready_files

T0 = 1_763_000_000 * 1_000_000_000 - (1_763_000_000 * 1_000_000_000) % HOUR_NS  # an hour start


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _payload(i: int) -> bytes:
    return orjson.dumps({"type": "l2update", "i": i, "changes": [["buy", "1.5", "2"]]})


def test_writer_size_limit_rotates_into_several_sealed_segments(cfg_factory, tmp_path: Path):
    cfg = cfg_factory(ingestion={"segment_max_bytes": 4096})
    clock = Clock(T0)
    w = SegmentWriter(cfg, "s", default_ex="coinbase", clock=clock)
    w.open()
    for i in range(200):
        w.append(T0 + i, _payload(i))
    w.close()
    files = ready_files(tmp_path / "hot", "s")
    assert len(files) > 3
    for f in files:
        assert f.stat().st_size < 4096 + 400  # one line plus the seal record past the limit
    envs = read_envelopes(files)
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert [orjson.loads(orjson.dumps(e.data))["i"] for e in envs if e.kind == "msg"] == list(
        range(200)
    )
    counters = [parse_segment_name(f.name).counter for f in files]
    assert counters == sorted(set(counters))
    assert not list((tmp_path / "hot" / "raw" / "active" / "s").iterdir())


def test_writer_hour_boundary_in_timestamps_splits_segments(cfg_factory, tmp_path: Path):
    clock = Clock(T0 + HOUR_NS - 10)
    w = SegmentWriter(cfg_factory(), "s", default_ex="coinbase", clock=clock)
    w.open()
    for i in range(10):
        w.append(T0 + HOUR_NS - 10 + i * 2, _payload(i))  # 5 before, 5 after the hour
    clock.now = T0 + HOUR_NS + 100
    w.close()
    files = ready_files(tmp_path / "hot", "s")
    assert len(files) == 2
    for f in files:
        start = int(parse_segment_name(f.name).start.timestamp()) * 1_000_000_000
        envs = read_envelopes([f])
        assert all(start <= e.ts < start + HOUR_NS for e in envs)
        assert sum(e.kind == "msg" for e in envs) == 5
        assert envs[-1].data["event"] == "seal"


def test_writer_tick_after_clock_hour_seals_live_segment(cfg_factory, tmp_path: Path):
    clock = Clock(T0 + 5)
    w = SegmentWriter(cfg_factory(), "s", clock=clock, live=True)
    w.open()
    w.append(T0 + 5, _payload(0))
    w.tick()
    assert ready_files(tmp_path / "hot", "s") == []
    clock.now = T0 + HOUR_NS + 1
    w.tick()
    files = ready_files(tmp_path / "hot", "s")
    assert len(files) == 1
    envs = read_envelopes(files)
    assert envs[-1].data == {
        "event": "seal",
        "reason": "hour",
        "segment": files[0].name,
        "lines": 1,
    }
    assert envs[-1].ts < T0 + HOUR_NS  # the seal record stays inside the segment's hour


def test_writer_tick_after_max_age_seals(cfg_factory, tmp_path: Path):
    clock = Clock(T0)
    w = SegmentWriter(cfg_factory(ingestion={"segment_max_age_s": 5}), "s", clock=clock)
    w.open()
    w.append(T0, _payload(0))
    clock.now = T0 + 6_000_000_000
    w.tick()
    assert len(ready_files(tmp_path / "hot", "s")) == 1


def test_writer_seal_fsyncs_before_rename_to_ready(cfg_factory, tmp_path: Path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        calls.append("fsync")
        return real_fsync(fd)

    def rename(src, dst):
        calls.append(f"rename:{Path(src).parent.parent.name}->{Path(dst).parent.parent.name}")
        return real_rename(src, dst)

    w = SegmentWriter(cfg_factory(), "s", clock=Clock(T0))
    w.open()
    w.append(T0, _payload(0))
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    w.seal()
    seg_rename = calls.index("rename:active->ready")
    assert "fsync" in calls[:seg_rename]


def test_writer_recovery_cuts_torn_tail_and_continues_seq(cfg_factory, tmp_path: Path):
    cfg = cfg_factory()
    w = SegmentWriter(cfg, "s", clock=Clock(T0))
    w.open()
    for i in range(50):
        w.append(T0 + i, _payload(i))
    w.flush()
    # kill -9: the process dies here; a batch was half written
    active = next((tmp_path / "hot" / "raw" / "active" / "s").iterdir())
    with active.open("ab") as fh:
        fh.write(b'{"ts":1,"src":"s","ex":"x","seq":50,"kind":"msg","data":{"type":"l2')
    os.close(w._fd)

    w2 = SegmentWriter(cfg, "s", clock=Clock(T0 + 1000))
    report = w2.open()
    assert report.segments == [active.name]
    assert report.torn_lines == 1 and report.torn_bytes > 0
    assert report.lines == 50
    w2.append(T0 + 2000, _payload(50))
    w2.close()
    envs = read_envelopes(ready_files(tmp_path / "hot", "s"))
    assert [e.seq for e in envs] == list(range(len(envs)))
    recover = [e for e in envs if e.kind == "ctl" and e.data["event"] == "recover"]
    assert len(recover) == 1 and recover[0].data["torn_lines"] == 1
    assert [e.data["i"] for e in envs if e.kind == "msg"] == list(range(51))
    names = [f.name for f in ready_files(tmp_path / "hot", "s")]
    assert len(names) == len(set(names)) == 2


def test_writer_restart_continues_seq_and_never_reuses_a_counter(cfg_factory, tmp_path: Path):
    cfg = cfg_factory()
    seen = []
    for run in range(3):
        w = SegmentWriter(cfg, "s", clock=Clock(T0))
        w.open()
        w.append(T0 + run, _payload(run))
        w.close()
        seen.append(w.sealed[-1])
        # the refinery takes the ready segment away between runs
        for f in ready_files(tmp_path / "hot", "s"):
            f.rename(tmp_path / f.name)
    assert len(set(seen)) == 3
    envs = read_envelopes(sorted(tmp_path.glob("segment_*.ndjson")))
    assert [e.seq for e in envs] == list(range(6))


def test_writer_state_dir_on_disk_survives_a_wiped_hot_zone(cfg_factory, tmp_path: Path):
    import shutil

    cfg = cfg_factory(
        ingestion={"segment_max_bytes": 1 << 20, "state_dir": str(tmp_path / "disk-state")}
    )
    seen = []
    for run in range(2):
        w = SegmentWriter(cfg, "s", clock=Clock(T0))
        w.open()
        w.append(T0 + run, _payload(run))
        w.close()
        seen.append(w.sealed[-1])
        for f in ready_files(tmp_path / "hot", "s"):
            f.rename(tmp_path / f.name)
        shutil.rmtree(tmp_path / "hot")  # a reboot wipes /dev/shm
    assert len(set(seen)) == 2
    envs = read_envelopes(sorted(tmp_path.glob("segment_*.ndjson")))
    assert [e.seq for e in envs] == list(range(4))
    assert (tmp_path / "disk-state" / "state" / "daemon" / "s.json").is_file()


def test_writer_fill_threshold_spills_new_segments(cfg_factory, tmp_path: Path, caplog):
    cfg = cfg_factory(storage={"shm_fill_threshold": 0.000001})
    w = SegmentWriter(cfg, "s", clock=Clock(T0))
    w.open()
    with caplog.at_level("ERROR"):
        w.append(T0, _payload(0))
        w.close()
    assert ready_files(tmp_path / "hot", "s") == []
    spilled = ready_files(tmp_path / "spill", "s")
    assert len(spilled) == 1 and w.spilled == 1
    assert "SPILLING" in caplog.text
    assert [e.kind for e in read_envelopes(spilled)] == ["msg", "ctl"]


def test_tailer_follows_active_segment_across_rotation(cfg_factory, tmp_path: Path):
    cfg = cfg_factory(ingestion={"segment_max_bytes": 2048, "flush_max_lines": 1})
    w = SegmentWriter(cfg, "s", clock=Clock(T0))
    w.open()
    w.append(T0, _payload(0))
    tailer = SegmentTailer(tmp_path / "hot", "s")
    got = []
    for i in range(1, 60):
        w.append(T0 + i, _payload(i))
        if i % 7 == 0:
            got += tailer.poll()
    w.close()
    got += tailer.poll()
    from fluxforge.segments import parse_envelope

    envs = [parse_envelope(line) for line in got]
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert [e.data["i"] for e in envs if not is_own_ctl(e)] == list(range(60))
    assert len(ready_files(tmp_path / "hot", "s")) > 2


def test_writer_hot_zone_full_mid_segment_spills_without_losing_a_line(
    cfg_factory, tmp_path: Path, monkeypatch, caplog
):
    import errno

    from ingestion_daemon import writer as writer_mod

    cfg = cfg_factory(ingestion={"flush_max_lines": 10})
    w = SegmentWriter(cfg, "s", clock=Clock(T0))
    w.open()
    real = writer_mod._write_all
    calls = {"n": 0}

    def full_after_two(fd, data):
        calls["n"] += 1
        if calls["n"] == 3 and w._root is w.storage:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(writer_mod, "_write_all", full_after_two)
    with caplog.at_level("ERROR"):
        for i in range(100):
            w.append(T0 + i, _payload(i))
        w.close()
    assert "NO SPACE LEFT" in caplog.text
    hot = ready_files(tmp_path / "hot", "s")
    spill = ready_files(tmp_path / "spill", "s")
    assert len(hot) == 1 and len(spill) == 1
    envs = read_envelopes(hot + spill)
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert [e.data["i"] for e in envs if e.kind == "msg"] == list(range(100))


def test_writer_spilled_segments_return_to_ready_when_hot_zone_has_room(
    cfg_factory, tmp_path: Path
):
    cfg = cfg_factory(storage={"shm_fill_threshold": 0.000001})
    clock = Clock(T0)
    w = SegmentWriter(cfg, "s", clock=clock)
    w.open()
    for i in range(3):
        w.append(T0 + i, _payload(i))
        w.seal()
    assert len(ready_files(tmp_path / "spill", "s")) == 3
    w.tick()
    assert ready_files(tmp_path / "hot", "s") == []  # still full
    w.fill_threshold = 1.0  # the refinery drained the hot zone
    w.append(T0 + 10, _payload(10))  # a new hot segment: spilled ones go first
    w.close()
    hot = ready_files(tmp_path / "hot", "s")
    assert ready_files(tmp_path / "spill", "s") == []
    assert len(hot) == 4
    envs = read_envelopes(hot)
    assert [e.seq for e in envs] == list(range(len(envs)))
