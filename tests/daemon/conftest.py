"""Daemon test helpers: configs in tmp dirs, reading sealed segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxforge.config import Config, config_from_dict
from fluxforge.segments import Envelope, iter_lines, parse_envelope


def make_config(tmp_path: Path, sources: list[dict[str, Any]] | None = None, **over: Any) -> Config:
    data: dict[str, Any] = {
        # threshold 1.0: a test machine's nearly full disk must not make segments spill
        "storage": {
            "base_dir": str(tmp_path / "hot"),
            "spill_dir": str(tmp_path / "spill"),
            "shm_fill_threshold": 1.0,
        },
        "sources": sources or [],
        "ingestion": {"segment_max_bytes": 1 << 20},
    }
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data, environ={})


def ready_files(root: Path, source: str) -> list[Path]:
    return sorted((root / "raw" / "ready" / source).glob("segment_*.ndjson"))


def read_envelopes(files: list[Path]) -> list[Envelope]:
    out = []
    for path in files:
        for _, line in iter_lines(path.read_bytes()):
            out.append(parse_envelope(line))
    return out


@pytest.fixture
def cfg_factory(tmp_path: Path):
    def make(sources: list[dict[str, Any]] | None = None, **over: Any) -> Config:
        return make_config(tmp_path, sources, **over)

    return make
