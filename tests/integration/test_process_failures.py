"""Failure handling of `process`: a failing segment is retried with backoff, then goes back to
ready/ with a count (never to failed/ by itself: only an operator's write-off does that, with
its reason); nothing of a written-off segment stays visible; a retry rewrites its parts to
exactly what a clean run gives; later segments of the same source wait."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from delta_fixture import committed_files

from fluxforge import refinery
from fluxforge.config import config_from_dict
from fluxforge.refinery import list_segments, process_ready
from fluxforge.storage import LocalStorage

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "malformed"
SEGMENT = "segment_20240102T03_00001.ndjson"
SECOND = "segment_20240102T03_00002.ndjson"


def _setup(root: Path, *names: str):
    ready = root / "raw" / "ready" / "fuzz"
    ready.mkdir(parents=True)
    for name in names:
        shutil.copy(CORPUS / SEGMENT, ready / name)
    return config_from_dict({"storage": {"backend": "local", "base_dir": str(root)}}, environ={})


def _parts(root: Path) -> dict[str, bytes]:
    return committed_files(root)


def _fail_after_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail after the segment was committed to every table (its manifest write), the worst
    moment: the rows are visible although the segment is not settled."""

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(refinery, "_write_manifest", boom)


def test_process_failing_segment_retried_never_failed_until_written_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _setup(tmp_path, SEGMENT)
    monkeypatch.setattr(refinery, "RETRY_WAITS_S", (0.0, 0.0))
    with monkeypatch.context() as m:
        _fail_after_parts(m)
        moved = []
        for _ in range(4):
            report = process_ready(cfg)
            assert report.segments == [] and len(report.failed) == 1
            assert report.held and report.held[0]["segment"] == SEGMENT
            moved.append((report.failed[0]["failures"], report.failed[0]["moved_to"]))
    assert moved == [(1, "ready"), (2, "ready"), (3, "ready"), (4, "ready")]
    assert not (tmp_path / "raw" / "failed").exists()
    record = refinery.writeoff(cfg, refinery.SegmentRef("fuzz", SEGMENT), "disk burnt down")
    assert record["was_in"] == "ready"
    failed = tmp_path / "raw" / "failed" / "fuzz"
    assert (failed / SEGMENT).read_bytes() == (CORPUS / SEGMENT).read_bytes()
    assert "disk burnt down" in (failed / f"{SEGMENT}.writeoff.json").read_text()
    assert list_segments(cfg, "ready") == [] and list_segments(cfg, "processing") == []
    assert _parts(tmp_path) == {}  # nothing of the given-up segment stays visible
    assert refinery.holds(cfg) == {}  # written off: the source goes on


def test_process_retry_after_failure_gives_clean_run_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_root, retry_root = tmp_path / "clean", tmp_path / "retry"
    assert process_ready(_setup(clean_root, SEGMENT)).failed == []
    cfg = _setup(retry_root, SEGMENT)
    monkeypatch.setattr(refinery, "RETRY_WAITS_S", (0.0,))
    with monkeypatch.context() as m:
        _fail_after_parts(m)
        assert process_ready(cfg).failed[0]["moved_to"] == "ready"
    assert _parts(retry_root)  # the failed attempt's parts were visible for a while
    report = process_ready(cfg)
    assert report.failed == [] and report.segments == [f"fuzz/{SEGMENT}"]
    assert _parts(retry_root) == _parts(clean_root)
    failures = retry_root / "state" / "failures" / "fuzz"
    assert not list(failures.glob("*.json"))  # the count is cleared on success


def test_process_failure_defers_later_segments_of_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _setup(tmp_path, SEGMENT, SECOND)
    real = refinery._process_one
    calls = []

    def first_fails(ctx, ref, raw_state):
        calls.append(ref.name)
        if ref.name == SEGMENT:
            raise ValueError("bad segment")
        return real(ctx, ref, raw_state)

    monkeypatch.setattr(refinery, "_process_one", first_fails)
    monkeypatch.setattr(refinery, "RETRY_WAITS_S", (0.0, 0.0))
    report = process_ready(cfg)
    assert calls == [SEGMENT] * 3  # retried; the second never ran on a state missing the first
    assert report.deferred == [f"fuzz/{SECOND}"]
    assert [r.name for r in list_segments(cfg, "ready")] == [SEGMENT, SECOND]
    state = orjson.loads(
        (tmp_path / "state" / "failures" / "fuzz" / f"{SEGMENT[:-7]}.json").read_bytes()
    )
    assert state["failures"] == 1 and "bad segment" in state["error"]


def test_process_recover_releases_segment_of_killed_run(tmp_path: Path) -> None:
    """A run killed after claiming (segment stuck in processing/): `--recover` puts it back and
    the retry gives the same parts as a clean run."""
    clean = tmp_path / "clean"
    assert process_ready(_setup(clean, SEGMENT)).failed == []
    root = tmp_path / "killed"
    cfg = _setup(root, SEGMENT)
    stuck = root / "raw" / "processing" / "fuzz"
    stuck.mkdir(parents=True)
    shutil.move(root / "raw" / "ready" / "fuzz" / SEGMENT, stuck / SEGMENT)
    held = process_ready(cfg)  # without --recover a claim is left alone, and said so
    assert held.segments == [] and held.held[0]["state"] == "processing"
    report = process_ready(cfg, recover=True)
    assert report.segments == [f"fuzz/{SEGMENT}"] and report.failed == []
    assert _parts(root) == _parts(clean)
    assert not list(stuck.glob("segment_*"))


def test_process_ready_segment_claimed_elsewhere_holds_back_later_segments_of_its_source(
    tmp_path, monkeypatch
) -> None:
    from fluxforge import refinery
    from fluxforge.config import config_from_dict
    from fluxforge.segments import encode_envelope
    from fluxforge.storage import Layout

    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(tmp_path)}}, environ={})
    layout, store = Layout.of(cfg.storage.etl_input), LocalStorage(tmp_path)
    for n in (1, 2, 3):
        line = encode_envelope(1_700_000_000_000_000_000 + n, "s", "coinbase", n, "msg", b"{}")
        store.write_bytes(layout.segment("ready", "s", f"segment_20231114T22_{n:05d}.ndjson"), line)
    real_claim = refinery.claim

    def claim(cfg_, ref):  # another worker wins the race for the second segment
        return False if ref.name.endswith("_00002.ndjson") else real_claim(cfg_, ref)

    monkeypatch.setattr(refinery, "claim", claim)
    report = refinery.process_ready(cfg)
    assert [s.rsplit("/", 1)[-1] for s in report.segments] == ["segment_20231114T22_00001.ndjson"]
    assert [r.name for r in refinery.list_segments(cfg, "ready")] == [
        "segment_20231114T22_00002.ndjson",
        "segment_20231114T22_00003.ndjson",
    ]
