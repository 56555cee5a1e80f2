"""Every storage path is built here: sanitized parts, deterministic names, no escapes."""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass

from fluxforge.config import LayerStorage, PathNames

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


class UnsafePathError(ValueError):
    """A storage key would leave the storage root."""


def sanitize_part(value: object) -> str:
    """One path part from data (exchange, symbol, source, channel).

    Anything outside ``[A-Za-z0-9._+=-]`` becomes ``_`` (so ``/``, ``\\``, NUL, spaces),
    leading dots are replaced (no ``..``), empty becomes ``_``, and length is capped.
    """
    # a segment names the same few exchanges, symbols and tables thousands of times
    return _sanitized(value) if type(value) is str else _sanitize(str(value))


@functools.lru_cache(maxsize=8192)
def _sanitized(text: str) -> str:
    return _sanitize(text)


def _sanitize(text: str) -> str:
    text = _UNSAFE.sub("_", text)
    text = re.sub(r"^\.+", lambda m: "_" * len(m.group()), text)
    return (text or "_")[:128]


def safe_key(path: str) -> str:
    """Normalize a relative key; refuse absolute paths, ``..`` escapes and NUL."""
    if "\0" in path:
        raise UnsafePathError(f"storage key contains NUL: {path!r}")
    norm = posixpath.normpath(path.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"storage key escapes the storage root: {path!r}")
    return "" if norm == "." else norm


@dataclass(frozen=True)
class Layout:
    """Relative keys for one storage layer (docs/segment-format.md, docs/table-schemas.md,
    docs/architecture.md)."""

    names: PathNames

    @classmethod
    def of(cls, layer: LayerStorage) -> Layout:
        return cls(layer.paths)

    def raw_state_dir(self, state: str, source: str) -> str:
        sub = {
            "active": self.names.active_subdir,
            "ready": self.names.ready_subdir,
            "processing": self.names.processing_subdir,
            "archive": self.names.archive_subdir,
            "failed": self.names.failed_subdir,
        }.get(state)
        if sub is None:
            raise ValueError(
                f"segment state {state!r}: allowed active, ready, processing, archive, failed"
            )
        return f"{self.names.raw_dir}/{sub}/{sanitize_part(source)}"

    def segment(self, state: str, source: str, name: str) -> str:
        return f"{self.raw_state_dir(state, source)}/{sanitize_part(name)}"

    def raw_sources(self, state: str) -> str:
        return posixpath.dirname(self.raw_state_dir(state, "x"))

    def lake_table(self, table: str) -> str:
        return f"{self.names.processed_dir}/{sanitize_part(table)}"

    def lake_partition(self, table: str, exchange: str, symbol: str, date: str) -> str:
        return (
            f"{self.lake_table(table)}/exchange={sanitize_part(exchange)}"
            f"/symbol={sanitize_part(symbol)}/date={sanitize_part(date)}"
        )

    def lake_part(self, table: str, exchange: str, symbol: str, date: str, segment: str) -> str:
        stem = sanitize_part(segment.removesuffix(".ndjson"))
        return f"{self.lake_partition(table, exchange, symbol, date)}/part-{stem}.parquet"

    def model_dir(self, model: str) -> str:
        """Parquet published by a SQL model (dbt_like_sql/): ``{processed_dir}/models/{model}``."""
        return f"{self.names.processed_dir}/models/{sanitize_part(model)}"

    def model_part(self, model: str, partition: dict[str, str], name: str = "data") -> str:
        """One Parquet file of a SQL model, hive-partitioned (date=/exchange=/symbol=)."""
        dirs = "".join(f"/{sanitize_part(k)}={sanitize_part(v)}" for k, v in partition.items())
        return f"{self.model_dir(model)}{dirs}/{sanitize_part(name)}.parquet"

    def state(self, *parts: str) -> str:
        return "/".join([self.names.state_dir, *(sanitize_part(p) for p in parts)])

    def cold_part(self, table: str, year: int, month: int, day: int, name: str) -> str:
        return (
            f"{self.names.cold_dir}/{sanitize_part(table)}/year={year:04d}/month={month:02d}"
            f"/day={day:02d}/{sanitize_part(name)}"
        )
