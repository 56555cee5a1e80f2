"""The one storage interface. Paths are POSIX-style keys relative to the storage root."""

from __future__ import annotations

import contextlib
import fnmatch
import mmap
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StorageError(OSError):
    """A storage operation failed; the message names the operation and the path."""


class Storage(ABC):
    """Read, write, atomic move, list with filename glob, delete, exists, size."""

    backend: str

    @abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    def read_mapped(self, path: str) -> bytes | mmap.mmap:
        """The bytes of `path` for a caller that only reads them (a raw segment): a local
        storage maps the file instead of copying it (``LocalStorage.read_mapped``); any other
        storage reads it."""
        return self.read_bytes(path)

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write atomically: readers see the old object or the whole new one."""

    @abstractmethod
    def move(self, src: str, dst: str) -> bool:
        """Move src to dst. Returns False when src is gone (someone else claimed it)."""

    @abstractmethod
    def list(self, prefix: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        """Sorted keys under directory `prefix` whose file name matches `pattern`."""

    @abstractmethod
    def delete(self, path: str) -> None: ...

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def upload_file(self, local_path: str | Path, dst: str) -> None:
        """Copy a local file into storage (multipart above the threshold on S3)."""

    @abstractmethod
    def download_file(self, src: str, local_path: str | Path) -> None: ...

    @abstractmethod
    def uri(self, path: str) -> str:
        """Full address usable by pyarrow / polars / duckdb (a local path or s3://bucket/key)."""

    def local_path(self, path: str) -> Path | None:
        """The local filesystem path of `path`, or None for remote storage."""
        return None

    # -- other readers: pyarrow, polars, fsspec (DuckDB) -------------------------------------
    # Local defaults; S3Storage overrides them with its endpoint, region and credentials.

    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs`` filesystem; use it with paths from ``arrow_path``."""
        from pyarrow import fs as pafs

        return pafs.LocalFileSystem()

    def arrow_path(self, path: str) -> str:
        """`path` as the filesystem of ``arrow_filesystem`` names it."""
        return self.uri(path)

    def storage_options(self) -> dict[str, str]:
        """``storage_options`` for polars readers/writers of ``uri(path)``."""
        return {}

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments of the fsspec filesystem of ``fsspec_filesystem``."""
        return {}

    def fsspec_filesystem(self) -> Any:
        """An fsspec filesystem for ``uri(path)`` (DuckDB ``register_filesystem``)."""
        import fsspec

        return fsspec.filesystem("file")

    @contextlib.contextmanager
    def durable_batch(self) -> Iterator[None]:
        """A block of writes whose durability is settled together at its end: inside it,
        ``write_bytes`` may return before the bytes are on stable storage, and leaving the
        block (without an exception) returns only once every file written in it is. Write in
        such a block only files that nothing references until after it (staged lake files,
        committed later): a crash inside it may leave them torn, never referenced.

        Here (S3) a write is durable when it returns: nothing to settle."""
        yield

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix, recursive=True)
        for key in keys:
            self.delete(key)
        return len(keys)

    @staticmethod
    def match(name: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(posixpath.basename(name), pattern)
