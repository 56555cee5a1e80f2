"""Local filesystem storage: atomic writes via temp file + fsync + rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fluxforge.storage.base import Storage, StorageError
from fluxforge.storage.paths import safe_key


class LocalStorage(Storage):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _p(self, path: str) -> Path:
        return self.root / safe_key(path) if path else self.root

    def local_path(self, path: str) -> Path:
        return self._p(path)

    def uri(self, path: str) -> str:
        return str(self._p(path))

    def read_bytes(self, path: str) -> bytes:
        try:
            return self._p(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"read {self._p(path)}: {exc.strerror or exc}") from exc

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._p(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"write {target}: {exc.strerror or exc}") from exc

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
        if not base.is_dir():
            return []
        found = base.rglob("*") if recursive else base.iterdir()
        out = []
        for entry in found:
            if (
                entry.is_file()
                and not entry.name.startswith(".tmp-")
                and self.match(entry.name, pattern)
            ):
                out.append(entry.relative_to(self.root).as_posix())
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
