"""Storage: one interface (`Storage`), local and S3 implementations, path building."""

from __future__ import annotations

from fluxforge.config import LayerStorage
from fluxforge.storage.base import Storage, StorageError
from fluxforge.storage.local import LocalStorage
from fluxforge.storage.paths import Layout, UnsafePathError, safe_key, sanitize_part

__all__ = [
    "Layout",
    "LocalStorage",
    "Storage",
    "StorageError",
    "UnsafePathError",
    "open_storage",
    "parked_storage",
    "safe_key",
    "sanitize_part",
]


def open_storage(layer: LayerStorage) -> Storage:
    """The storage implementation for a configured layer (the only backend switch)."""
    if layer.backend == "s3":
        from fluxforge.storage.s3 import S3Storage

        return S3Storage(layer.bucket, layer.s3)
    return LocalStorage(layer.base_dir)


def parked_storage(storage_cfg: object) -> LocalStorage:
    """Where the daemon parks segments S3 kept refusing (``storage.spill_dir``, else the
    working directory), in the ready/ layout; retried until uploaded, listed by status."""
    return LocalStorage(getattr(storage_cfg, "spill_dir", None) or ".")
