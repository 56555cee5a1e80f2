from __future__ import annotations

from pathlib import Path

import pytest

from fluxforge.config import PathNames
from fluxforge.storage import Layout, LocalStorage, UnsafePathError, sanitize_part


def test_local_storage_roundtrip_list_move_delete(tmp_path: Path) -> None:
    st = LocalStorage(tmp_path)
    st.write_bytes("raw/ready/src/segment_20240101T00_00001.ndjson", b"a\n")
    st.write_bytes("raw/ready/src/other.txt", b"b")
    assert st.list("raw/ready/src", "segment_*.ndjson") == [
        "raw/ready/src/segment_20240101T00_00001.ndjson"
    ]
    assert st.size("raw/ready/src/other.txt") == 1
    assert st.move("raw/ready/src/other.txt", "raw/processing/src/other.txt") is True
    assert st.move("raw/ready/src/other.txt", "raw/processing/src/other.txt") is False
    assert st.read_bytes("raw/processing/src/other.txt") == b"b"
    st.delete("raw/processing/src/other.txt")
    assert not st.exists("raw/processing/src/other.txt")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a\0b"])
def test_storage_refuses_keys_that_escape_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafePathError):
        LocalStorage(tmp_path).write_bytes(key, b"x")


@pytest.mark.parametrize("value", ["../../etc", "a/b", "..", "x\0y", "BTC/USD", ""])
def test_sanitized_parts_never_contain_separators_or_dotdot(value: str) -> None:
    part = sanitize_part(value)
    assert "/" not in part and "\0" not in part and not part.startswith(".") and part


def test_layout_builds_hive_part_paths_from_hostile_values() -> None:
    lay = Layout(PathNames())
    key = lay.lake_part("trades", "../evil", "BTC/USD", "2024-01-01", "segment_x.ndjson")
    assert key == (
        "processed/trades/exchange=___evil/symbol=BTC_USD/date=2024-01-01/part-segment_x.parquet"
    )


def test_durable_batch_writes_are_in_place_at_once_and_synced_by_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    store = LocalStorage(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    with store.durable_batch():
        for i in range(20):
            store.write_bytes(f"a/p{i % 3}/f{i}.bin", bytes([i]) * 100)
            assert store.read_bytes(f"a/p{i % 3}/f{i}.bin") == bytes([i]) * 100
        with store.durable_batch():  # nested: settled by the outer block
            store.write_bytes("a/p0/nested.bin", b"n")
    assert len(synced) == 21 + 3  # every file, then each of the three directories once
    assert sorted(p.name for p in tmp_path.rglob(".tmp-*")) == []
    assert store.read_bytes("a/p0/nested.bin") == b"n"


def test_durable_batch_raises_when_a_file_cannot_be_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from fluxforge.storage.base import StorageError

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    store = LocalStorage(tmp_path)
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(StorageError, match="fsync"), store.durable_batch():
        store.write_bytes("x/f.bin", b"data")


def test_durable_batch_refuses_links_out_of_the_root_and_follows_links_inside_it(
    tmp_path: Path,
) -> None:
    """Inside a durable_batch a path's directories are checked by lstat (remembered for
    the block) instead of realpath: a link leading out is still refused, wherever it sits
    (a directory, the file itself), and a link leading to a directory inside the root is
    still followed."""
    import os

    from fluxforge.storage.base import StorageError

    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "lake" / "t" / "real").mkdir(parents=True)
    os.symlink(outside, root / "lake" / "t" / "out")
    os.symlink(root / "lake" / "t" / "real", root / "lake" / "t" / "in")
    os.symlink(outside / "f.bin", root / "lake" / "t" / "real" / "leaf.bin")
    store = LocalStorage(root)
    with store.durable_batch():
        store.write_bytes("lake/t/real/a.bin", b"a")  # lake, lake/t, lake/t/real now known
        with pytest.raises(StorageError, match="outside the storage root"):
            store.write_bytes("lake/t/out/b.bin", b"b")
        with pytest.raises(StorageError, match="outside the storage root"):
            store.write_bytes("lake/t/out/new/c.bin", b"c")
        with pytest.raises(StorageError, match="outside the storage root"):
            store.read_bytes("lake/t/real/leaf.bin")
        store.write_bytes("lake/t/in/d.bin", b"d")
        store.write_bytes("lake/t/new/deeper/e.bin", b"e")  # directories made on the way
    assert list(outside.iterdir()) == []
    assert (root / "lake" / "t" / "real" / "d.bin").read_bytes() == b"d"
    assert (root / "lake" / "t" / "new" / "deeper" / "e.bin").read_bytes() == b"e"


def test_durable_batch_writes_new_files_in_place_and_replaces_existing_ones_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new name is written in place (no temporary file: nothing references it before the
    block ends); an existing name (a retry or a rebuild writing a file readers may already
    use, or one a crash left torn) is written beside it and renamed over it, so a reader
    never sees it half written; a leaf link is never followed."""
    import os
    import stat
    import tempfile

    from fluxforge.storage.base import StorageError

    temps: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def counted(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        temps.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", counted)
    store = LocalStorage(tmp_path / "root")
    store.write_bytes("a/old.bin", b"old")  # outside a block: always temp + rename
    assert len(temps) == 1
    (tmp_path / "root" / "a" / "torn.bin").write_bytes(b"to")
    (tmp_path / "root" / "a" / "real.bin").write_bytes(b"real")
    os.symlink(tmp_path / "root" / "a" / "real.bin", tmp_path / "root" / "a" / "link.bin")
    with open(tmp_path / "root" / "a" / "old.bin", "rb") as reader:
        with store.durable_batch():
            store.write_bytes("a/b/new.bin", b"fresh")
            assert len(temps) == 1
            store.write_bytes("a/old.bin", b"new")
            store.write_bytes("a/torn.bin", b"whole")
            store.write_bytes("a/link.bin", b"over the link")
            assert len(temps) == 4
        assert reader.read() == b"old"  # the file a reader holds was replaced, not rewritten
    root = tmp_path / "root"
    assert (root / "a" / "b" / "new.bin").read_bytes() == b"fresh"
    assert (root / "a" / "old.bin").read_bytes() == b"new"
    assert (root / "a" / "torn.bin").read_bytes() == b"whole"
    assert (root / "a" / "real.bin").read_bytes() == b"real"
    assert (root / "a" / "link.bin").read_bytes() == b"over the link"
    assert not (root / "a" / "link.bin").is_symlink()
    # the same permissions either way
    assert stat.S_IMODE((root / "a" / "b" / "new.bin").stat().st_mode) == stat.S_IMODE(
        (root / "a" / "old.bin").stat().st_mode
    )
    assert sorted(p.name for p in root.rglob(".tmp-*")) == []

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="No space"), store.durable_batch():
        store.write_bytes("a/c/failed.bin", b"x" * 10)
    assert not (root / "a" / "c" / "failed.bin").exists()


def test_read_mapped_reads_like_read_bytes_and_outlives_moves_and_deletes(tmp_path: Path) -> None:
    """A mapped segment reads as its bytes (length, slices from either end, find, the buffer
    numpy scans) and stays readable after the file is renamed (archived) or deleted; an
    empty file gives b"", a missing one a StorageError, a link out of the root is refused."""
    import os

    import numpy as np

    from fluxforge.refinery import segment_seq_range
    from fluxforge.segments import encode_envelope, iter_lines
    from fluxforge.storage.base import StorageError

    st = LocalStorage(tmp_path / "root")
    body = b"".join(
        encode_envelope(10**18 + i, "s", "e", i, "msg", b'{"x":"%b"}' % (b"y" * (i % 97)))
        for i in range(1, 3000)
    )
    st.write_bytes("raw/processing/s/seg.ndjson", body)
    data = st.read_mapped("raw/processing/s/seg.ndjson")
    assert not isinstance(data, bytes)  # mapped, not copied
    assert len(data) == len(body) and data[:] == body
    assert data[-(1 << 16) :] == body[-(1 << 16) :] and data[10:20] == body[10:20]
    assert data.find(b"\n", 5) == body.find(b"\n", 5)
    assert np.frombuffer(data, np.uint8).sum() == np.frombuffer(body, np.uint8).sum()
    assert list(iter_lines(data)) == list(iter_lines(body))
    assert segment_seq_range(data) == segment_seq_range(body) == (1, 2999)
    assert st.move("raw/processing/s/seg.ndjson", "raw/archive/s/seg.ndjson")
    st.delete("raw/archive/s/seg.ndjson")
    assert data[:] == body  # the map keeps the pages of a renamed, then unlinked file
    st.write_bytes("raw/processing/s/empty.ndjson", b"")
    assert st.read_mapped("raw/processing/s/empty.ndjson") == b""
    with pytest.raises(StorageError, match="read"):
        st.read_mapped("raw/processing/s/missing.ndjson")
    (tmp_path / "outside.ndjson").write_bytes(body)
    os.symlink(tmp_path / "outside.ndjson", tmp_path / "root" / "raw" / "link.ndjson")
    with pytest.raises(StorageError, match="outside the storage root"):
        st.read_mapped("raw/link.ndjson")
