"""The daemon under a hot zone past its fill threshold: new segments go to the spill dir."""

from __future__ import annotations

from pathlib import Path

from ingestion_daemon.service import run_daemon

from .conftest import make_config, read_envelopes, ready_files


def test_daemon_fill_threshold_from_config_spills_every_new_segment(tmp_path: Path, caplog):
    src = {"name": "syn", "type": "synthetic", "rate": 100000, "max_messages": 3000, "seed": 3}
    cfg = make_config(
        tmp_path,
        [src],
        storage={"shm_fill_threshold": 0.0001},
        ingestion={"segment_max_bytes": 65536},
    )
    with caplog.at_level("ERROR"):
        assert run_daemon(cfg) == 0
    assert ready_files(tmp_path / "hot", "syn") == []
    spilled = ready_files(tmp_path / "spill", "syn")
    assert len(spilled) > 3
    assert caplog.text.count("SPILLING") == len(spilled)
    envs = read_envelopes(spilled)
    assert [e.seq for e in envs] == list(range(len(envs)))
    seqs = [e.data["sequence_num"] for e in envs if e.kind == "msg"]
    assert seqs == list(range(len(seqs)))
