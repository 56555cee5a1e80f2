"""Local filesystem storage: atomic writes via temp file + fsync + rename (in a
``durable_batch``: a new file written in place, since nothing references it before the block
ends, an existing one by temp file + rename; the fsyncs in background threads, all settled at
the end of the block).

Nothing is read or written outside the root, symlinks included: every path is resolved and
must stay inside the root (a symlink leading out is refused with ``StorageError``; inside a
``durable_batch`` a path none of whose parts is a link is not resolved, and a directory found
to be no link is not looked at again until the block ends), and listings skip symlinks
altogether (logged), so discovery never picks up a file planted as a link, wherever it
points."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from fluxforge.storage.base import Storage, StorageError
from fluxforge.storage.paths import safe_key

log = logging.getLogger(__name__)
# fsyncs in flight in a durable_batch: enough for the journal to commit many files at once
SYNC_THREADS = 8


class LocalStorage(Storage):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._syncs: list[Future[Path]] | None = None  # fsyncs in flight (durable_batch)
        self._pool: ThreadPoolExecutor | None = None
        # directories below the root found to be no symlink, during a durable_batch
        self._plain_dirs: set[str] | None = None

    @contextlib.contextmanager
    def durable_batch(self) -> Iterator[None]:
        """Inside the block, ``write_bytes`` writes a new file in place (``_create_new``) or
        renames an existing one's replacement into place at once, and hands its fsync to a
        few threads, so the disk's flushes overlap each other (the journal
        commits them together) and the caller's work; the end of the block fsyncs the
        directories that got files and waits for all of it, raising the first failure."""
        if self._syncs is not None:  # nested: the outer block settles everything
            yield
            return
        self._syncs = []
        self._pool = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="fsync")
        # the root's own path is checked once for the block (see _p)
        self._plain_dirs = set() if os.path.realpath(self.root) == str(self.root) else None
        dirs: dict[Path, None] = {}
        try:
            yield
            for future in self._syncs:
                dirs[future.result().parent] = None
            for future in [self._pool.submit(_fsync_dir, d) for d in dirs]:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._syncs, self._pool, self._plain_dirs = None, None, None

    def _p(self, path: str) -> Path:
        key = safe_key(path) if path else ""
        target = self.root / key if key else self.root
        plain = self._plain_dirs
        if plain is not None and key and _no_link_below(str(self.root), key, plain):
            return target
        real = Path(os.path.realpath(target))
        if real != self.root and self.root not in real.parents:
            raise StorageError(
                f"{target} leads outside the storage root {self.root} (to {real}) through a "
                "symlink: refused"
            )
        return target

    def local_path(self, path: str) -> Path:
        return self._p(path)

    def uri(self, path: str) -> str:
        return str(self._p(path))

    def read_bytes(self, path: str) -> bytes:
        try:
            return self._p(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"read {self._p(path)}: {exc.strerror or exc}") from exc

    def read_mapped(self, path: str) -> bytes | mmap.mmap:
        """A read-only memory map of the file (bytes-like: ``len``, slices, ``find``, the
        buffer protocol): no copy of a large segment into the process (≈ 35 ms of CPU for 50
        MB) and no page of its own, the page cache's pages are shared. For sealed files only:
        renaming or deleting a mapped file keeps its pages, but shortening it under the map
        would end the process (SIGBUS); raw segments in processing/ and archive/ are only
        ever renamed or deleted, never written again. An empty file gives ``b""`` (nothing
        to map)."""
        target = self._p(path)
        try:
            with open(target, "rb") as fh:
                if os.fstat(fh.fileno()).st_size == 0:
                    return b""
                # the map keeps its own reference to the file: closing ours is fine
                return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise StorageError(f"read {target}: {exc.strerror or exc}") from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._p(path)
        deferred = self._syncs is not None and self._pool is not None
        if deferred and _create_new(target, data):
            self._syncs.append(self._pool.submit(_fsync_file, target))  # type: ignore[union-attr]
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        except FileNotFoundError:  # a new directory (an existing one costs no mkdir calls)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if not deferred:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"write {target}: {exc.strerror or exc}") from exc
        if deferred:
            self._syncs.append(self._pool.submit(_fsync_file, target))  # type: ignore[union-attr]

    def move(self, src: str, dst: str) -> bool:
        source, target = self._p(src), self._p(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno != 18:  # EXDEV: different filesystems, copy then delete below
                raise StorageError(f"move {source} -> {target}: {exc.strerror}") from exc
            tmp = target.with_name(f".tmp-{target.name}")
            shutil.copy2(source, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            source.unlink()
        return True

    def list(self, prefix: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        base = self._p(prefix)
        if base.is_symlink() or not base.is_dir():
            return []
        out = []
        todo = [base]
        while todo:
            folder = todo.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        log.warning("%s is a symlink: skipped (not read, not listed)", entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        if recursive:
                            todo.append(Path(entry.path))
                    elif (
                        entry.is_file(follow_symlinks=False)
                        and not entry.name.startswith(".tmp-")
                        and self.match(entry.name, pattern)
                    ):
                        out.append(Path(entry.path).relative_to(self.root).as_posix())
        return sorted(out)

    def delete(self, path: str) -> None:
        self._p(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def size(self, path: str) -> int:
        try:
            return self._p(path).stat().st_size
        except OSError as exc:
            raise StorageError(f"size {self._p(path)}: {exc.strerror}") from exc

    def upload_file(self, local_path: str | Path, dst: str) -> None:
        target = self._p(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(local_path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def download_file(self, src: str, local_path: str | Path) -> None:
        shutil.copyfile(self._p(src), local_path)


def _no_link_below(root: str, key: str, plain: set[str]) -> bool:
    """Whether no existing part of `key` below `root` is a symlink: then the path stays
    inside the root without a ``realpath`` (one ``lstat`` per part of the root and the key,
    in Python). Directories found plain are remembered in `plain` for one durable_batch: a
    segment's files share most of their directories. False (a link, or a part that is no
    directory): ``realpath`` decides."""
    prefix = root.rstrip("/")
    parts = key.split("/")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        prefix = f"{prefix}/{part}"
        if prefix in plain:
            continue
        try:
            mode = os.lstat(prefix).st_mode
        except FileNotFoundError:
            return True  # nothing below exists yet: no link to follow
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
        if i < last:
            plain.add(prefix)
    return True


def _create_new(target: Path, data: bytes) -> bool:
    """Write `data` as the new file `target` in place (a ``durable_batch``'s file, which
    nothing references before the block ends: no temporary file and rename needed; a crash
    may leave it torn under its own name, unreferenced, as the block allows). False, writing
    nothing, when `target` exists (a file or a link: ``O_EXCL`` follows no link): the caller
    replaces it atomically, so a file that readers may already reference (a retry or a
    rebuild writing the same name) is never seen half written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        try:
            fd = os.open(target, flags, 0o600)  # the mode tempfile.mkstemp gives
        except FileNotFoundError:  # a new directory (an existing one costs no mkdir calls)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, flags, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"write {target}: {exc.strerror or exc}") from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise StorageError(f"write {target}: {exc.strerror or exc}") from exc
    os.close(fd)
    return True


def _fsync_file(path: Path) -> Path:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"write {path}: fsync: {exc.strerror or exc}") from exc
    return path


def _fsync_dir(path: Path) -> None:
    """The directory entries of files renamed into `path` reach the disk too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"fsync directory {path}: {exc.strerror or exc}") from exc
