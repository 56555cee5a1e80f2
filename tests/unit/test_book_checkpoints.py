"""Book checkpoints: filed per day, found without listing every day, thinned to what a rebuild
needs once they are older than ``refinery.checkpoint_keep_days``."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from fluxforge.config import PathNames
from fluxforge.refinery import (
    SegmentRef,
    find_book_checkpoint,
    load_book_state,
    prune_book_checkpoints,
    save_book_state,
)
from fluxforge.storage import Layout, LocalStorage


class CountingStorage(LocalStorage):
    """A local storage that remembers which folders were listed (and how)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[tuple[str, bool]] = []

    def list(self, prefix: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        self.listed.append((prefix, recursive))
        return super().list(prefix, pattern, recursive)


def _ref(hour: str, counter: int) -> SegmentRef:
    return SegmentRef("src", f"segment_{hour}_{counter:05d}.ndjson")


def _save(storage: LocalStorage, layout: Layout, ref: SegmentRef) -> None:
    save_book_state(storage, layout, ref, {("coinbase", "BTC-USD"): ref.name.encode()})


@pytest.fixture
def store(tmp_path: Path) -> tuple[CountingStorage, Layout]:
    return CountingStorage(tmp_path), Layout(PathNames())


def test_checkpoint_lookup_same_day_lists_one_folder(store) -> None:
    storage, layout = store
    for hour, counter in [("20240101T23", 1), ("20240102T00", 1), ("20240102T05", 2)]:
        _save(storage, layout, _ref(hour, counter))
    storage.listed.clear()
    state = load_book_state(storage, layout, _ref("20240102T07", 3))
    assert state == {("coinbase", "BTC-USD"): b"segment_20240102T05_00002.ndjson"}
    assert storage.listed == [("state/books/src/date=2024-01-02", False)]


def test_checkpoint_lookup_first_segment_of_day_takes_previous_day_last(store) -> None:
    storage, layout = store
    for hour, counter in [("20240101T10", 1), ("20240101T23", 2), ("20240102T05", 3)]:
        _save(storage, layout, _ref(hour, counter))
    storage.listed.clear()
    key = find_book_checkpoint(storage, layout, _ref("20240102T00", 1))
    assert key is not None and key.endswith("date=2024-01-01/segment_20240101T23_00002.json")
    assert all(not recursive for _, recursive in storage.listed)


def test_checkpoint_lookup_after_idle_days_falls_back_to_full_listing(store) -> None:
    storage, layout = store
    _save(storage, layout, _ref("20240101T10", 1))
    _save(storage, layout, _ref("20240109T10", 2))  # later: must not be picked
    key = find_book_checkpoint(storage, layout, _ref("20240105T00", 1))
    assert key is not None and key.endswith("segment_20240101T10_00001.json")
    assert ("state/books/src", True) in storage.listed
    assert find_book_checkpoint(storage, layout, _ref("20231231T00", 1)) is None


def test_prune_keeps_every_recent_checkpoint_and_each_old_days_last(store) -> None:
    storage, layout = store
    refs = [
        _ref(f"2024010{d}T{h:02d}", n)
        for n, (d, h) in enumerate([(1, 1), (1, 9), (1, 22), (2, 3), (2, 4), (3, 0), (3, 12)])
    ]
    for ref in refs:
        _save(storage, layout, ref)
    deleted = prune_book_checkpoints(storage, layout, "src", datetime.date(2024, 1, 3))
    left = sorted(k.rsplit("/", 1)[-1] for k in storage.list("state/books/src", recursive=True))
    assert deleted == 3
    assert left == [
        "segment_20240101T22_00002.json",
        "segment_20240102T04_00004.json",
        "segment_20240103T00_00005.json",
        "segment_20240103T12_00006.json",
    ]
    # what a rebuild of 2024-01-02 and 2024-01-03 starts from is still there
    assert load_book_state(storage, layout, _ref("20240102T00", 0)) == {
        ("coinbase", "BTC-USD"): b"segment_20240101T22_00002.ndjson"
    }
    assert load_book_state(storage, layout, _ref("20240103T00", 0)) == {
        ("coinbase", "BTC-USD"): b"segment_20240102T04_00004.ndjson"
    }
    assert prune_book_checkpoints(storage, layout, "src", datetime.date(2024, 1, 3)) == 0


def test_processing_a_new_day_prunes_checkpoints_past_the_keep_window(tmp_path: Path) -> None:
    from fluxforge.config import config_from_dict
    from fluxforge.refinery import process_ready
    from tests.reliability.conftest import make_synthetic_segments

    segs = make_synthetic_segments(tmp_path / "data", messages=6000, max_bytes=48 * 1024)
    assert len(segs) >= 8
    # two segments per day over four days (their content keeps its own timestamps)
    for n, seg in enumerate(segs[:8]):
        seg.rename(seg.with_name(f"segment_202401{n // 2 + 1:02d}T{n % 2:02d}_{n:05d}.ndjson"))
    for seg in segs[8:]:
        seg.unlink()
    cfg = config_from_dict(
        {
            "storage": {"base_dir": str(tmp_path / "data")},
            "refinery": {"checkpoint_keep_days": 1},
        },
        environ={},
    )
    report = process_ready(cfg)
    assert report.failed == [] and len(report.segments) == 8
    books = tmp_path / "data" / "state" / "books" / "syn"
    kept = {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(books.iterdir())}
    assert kept == {
        "date=2024-01-01": ["segment_20240101T01_00001.json"],
        "date=2024-01-02": ["segment_20240102T01_00003.json"],
        "date=2024-01-03": ["segment_20240103T00_00004.json", "segment_20240103T01_00005.json"],
        "date=2024-01-04": ["segment_20240104T00_00006.json", "segment_20240104T01_00007.json"],
    }
