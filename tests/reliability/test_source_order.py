"""Issue cases 1, 6 and 11: a source's segments are refined strictly in order.

Case 1: after a kill -9 (segments orphaned in processing/) a rerun took the source's later
segments and refined them without their predecessors' book state (21 % of Coinbase book deltas
lost), exiting 0. Now the source is held: the run says by what and exits non-zero; ``fluxforge
recover`` releases the orphans (never a live run's claims) and the lake then equals a clean run.

Case 6: a transient failure became permanent (moved to failed/ after 3 attempts) and the later
segments went on without it. Now it is retried with backoff and never leaves for failed/ except
by an operator's write-off.

Case 11: a plain rerun said "processed 0 segment(s)" and exited 0 while segments sat in
processing/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fluxforge import refinery
from fluxforge.locks import refinery_lock_path
from fluxforge.refinery import SegmentRef, process_ready
from fluxforge.storage import LocalStorage
from tests.reliability.conftest import (
    REPO,
    clean_env,
    fluxforge_cmd,
    load,
    popen,
    ready_files,
    record_figures,
    write_config,
)


def _store(root: Path, inputs: list[Path]) -> Path:
    ready = root / "raw" / "ready" / "syn"
    ready.mkdir(parents=True)
    for path in inputs:
        shutil.copy(path, ready / path.name)
    return write_config(root.parent / f"{root.name}.yaml", {"storage": {"base_dir": str(root)}})


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        fluxforge_cmd(*args, "--config", str(config)),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_order_orphans_hold_source_until_recover_then_lake_equals_clean_run(
    tmp_path: Path, synthetic_input: list[Path]
) -> None:
    clean_cfg = _store(tmp_path / "clean", synthetic_input)
    clean = process_ready(load({"storage": {"base_dir": str(tmp_path / "clean")}}))
    assert len(clean.segments) == len(synthetic_input) and not clean.held

    root = tmp_path / "killed"
    config = _store(root, synthetic_input)
    # a run killed -9 after claiming the first two segments: they sit in processing/
    stuck = root / "raw" / "processing" / "syn"
    stuck.mkdir(parents=True)
    for path in synthetic_input[:2]:
        shutil.move(root / "raw" / "ready" / "syn" / path.name, stuck / path.name)

    rerun = _cli(config, "process")
    assert rerun.returncode != 0, rerun.stderr
    assert f"HELD syn at {synthetic_input[0].name} (processing/)" in rerun.stderr
    assert "fluxforge recover" in rerun.stderr
    assert "processed 0 segment(s)" in rerun.stderr
    # the later segments were not refined without their predecessors' books
    assert [p.name for p in ready_files(root, "syn")] == [p.name for p in synthetic_input[2:]]
    assert not (root / "raw" / "archive").exists()
    status = _cli(config, "status")
    assert f"HELD syn at {synthetic_input[0].name}" in status.stdout

    recovered = _cli(config, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "2 segment(s) released" in recovered.stdout
    final = process_ready(load({"storage": {"base_dir": str(root)}}))
    assert len(final.segments) == len(synthetic_input) and not final.held and not final.failed
    assert final.rows == clean.rows  # no book delta, snapshot or trade lost
    record_figures(
        "source_order_after_kill",
        {
            "orphans": 2,
            "held_exit_code": rerun.returncode,
            "book_deltas_clean": clean.rows["book_deltas"],
            "book_deltas_after_recover": final.rows["book_deltas"],
            "snapshots_clean": clean.rows["book_snapshots"],
            "snapshots_after_recover": final.rows["book_snapshots"],
        },
    )
    assert clean_cfg.exists()


def test_order_recover_never_steals_a_live_runs_claims(
    tmp_path: Path, synthetic_input: list[Path]
) -> None:
    root = tmp_path / "live"
    config = _store(root, synthetic_input[:2])
    stuck = root / "raw" / "processing" / "syn"
    stuck.mkdir(parents=True)
    shutil.move(root / "raw" / "ready" / "syn" / synthetic_input[0].name, stuck)
    lock = refinery_lock_path(LocalStorage(root), "syn")
    # a live run of the source (another process holding its refinery lock)
    holder = popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fluxforge.locks import exclusive\n"
            f"with exclusive({str(lock)!r}, 'refinery', 'refinery of syn'):\n"
            "    print('held', flush=True); time.sleep(120)",
        ]
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        recovered = _cli(config, "recover")
        assert recovered.returncode != 0
        assert "0 segment(s) released" in recovered.stdout
        assert (stuck / synthetic_input[0].name).exists()  # the live claim stays
        run = _cli(config, "process")
        assert run.returncode != 0 and "HELD syn" in run.stderr
        assert (stuck / synthetic_input[0].name).exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_order_transient_failure_retried_never_skipped(
    tmp_path: Path, synthetic_input: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "transient"
    _store(root, synthetic_input)
    cfg = load({"storage": {"base_dir": str(root)}})
    monkeypatch.setattr(refinery, "RETRY_WAITS_S", (0.1, 0.2))
    real = refinery._process_one
    attempts: dict[str, int] = {}

    def flaky(ctx, ref, raw_state):
        attempts[ref.name] = attempts.get(ref.name, 0) + 1
        if ref.name == synthetic_input[1].name and attempts[ref.name] < 3:
            raise OSError(28, "No space left on device")
        return real(ctx, ref, raw_state)

    monkeypatch.setattr(refinery, "_process_one", flaky)
    report = process_ready(cfg)
    assert not report.failed and not report.held
    assert len(report.segments) == len(synthetic_input)  # retried in the run, in order

    # a failure that lasts: the source stops at it, run after run, and never skips it
    root2 = tmp_path / "lasting"
    _store(root2, synthetic_input)
    cfg2 = load({"storage": {"base_dir": str(root2)}})
    bad = synthetic_input[1].name

    def broken(ctx, ref, raw_state):
        if ref.name == bad:
            raise OSError(28, "No space left on device")
        return real(ctx, ref, raw_state)

    monkeypatch.setattr(refinery, "_process_one", broken)
    for _ in range(4):
        report = process_ready(cfg2)
        assert report.held and report.held[0]["segment"] == bad
    assert [p.name for p in ready_files(root2, "syn", "archive")] == [synthetic_input[0].name]
    assert not (root2 / "raw" / "failed").exists()
    # the operator gives it up: the source goes on after it
    record = refinery.writeoff(cfg2, SegmentRef("syn", bad), "disk lost for good")
    # the books the source had end there: one writeoff gap row per book, spanning the segment
    from fluxforge import lake
    from fluxforge.storage import LocalStorage

    gaps = lake.read_table(LocalStorage(root2), "gap_ledger").to_pylist()
    writeoffs = [g for g in gaps if g["cause"] == "writeoff"]
    assert record["gap_rows"] == len(writeoffs) > 0
    assert all(g["segment"] == bad and "disk lost for good" in g["detail"] for g in writeoffs)
    monkeypatch.setattr(refinery, "_process_one", real)
    after = process_ready(cfg2)
    assert not after.held and len(after.segments) == len(synthetic_input) - 2
    record_figures(
        "source_order_transient",
        {"attempts_of_flaky_segment": attempts[synthetic_input[1].name], "runs_held": 4},
    )
