"""Helpers of the Dagster-layer tests: FluxForge configs in tmp dirs, raw segments replayed from
the real captures by the ingestion daemon, lake files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from delta_fixture import committed_files

from fluxforge.config import Config

SMALL_CAPTURES = ("KRAKEN/KRAKEN.ws.48.0", "KRAKEN/KRAKEN.ws.49.0", "BITGET/BITGET.ws.2.0")


def write_config(root: Path, inputs: str, **sections: dict[str, Any]) -> Path:
    """A config with every storage layer under root/data and one replay source `replay`."""
    data: dict[str, Any] = {
        "storage": {"backend": "local", "base_dir": str(root / "data")},
        "sources": [
            {"name": "replay", "type": "replay", "path": inputs, "speed": 0},
            {"name": "synthetic", "type": "synthetic", "enabled": False, "seed": 7},
        ],
        "ingestion": {"segment_max_bytes": 65536},
        # the captures replayed into these deployments are from 2021-2022, written after the
        # code location loads: the first partition is set, not taken from the data at load
        "dagster": {
            "sensor_interval_s": 1,
            "max_segments_per_run": 3,
            "partitions_start_date": "2021-01-01",
        },
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = root / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def replay(cfg: Config) -> int:
    """Run the daemon's replay source at full speed into raw/ready; returns its exit code."""
    from ingestion_daemon.service import run_daemon

    return run_daemon(cfg, ["replay"], None)


def ready_names(root: Path, source: str = "replay", state: str = "ready") -> list[str]:
    return sorted(p.name for p in (root / "data" / "raw" / state / source).glob("segment_*"))


def lake_bytes(root: Path) -> dict[str, bytes]:
    """The committed files of every lake table (from the Delta logs) and their bytes."""
    return committed_files(root / "data")


def link_captures(root: Path, captures: Path, names: tuple[str, ...] | None) -> str:
    """A glob over symlinks to the chosen capture files (all of them when names is None)."""
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    chosen = names or tuple(p.relative_to(captures).as_posix() for p in captures.glob("*/*"))
    for name in chosen:
        # the replay source takes the exchange from the file name: keep the names
        (inputs / name).parent.mkdir(exist_ok=True)
        (inputs / name).symlink_to(captures / name)
    return str(inputs / "*" / "*")
