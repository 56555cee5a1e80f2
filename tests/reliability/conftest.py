"""Reliability suite helpers: deterministic synthetic input, configs, figures.

Figures (fault counts, retries, kills, lines/s) are printed as ``RELIABILITY name: {...}`` lines
when recorded (visible with ``-s``), repeated in pytest's terminal summary, and written to
``$FLUXFORGE_RELIABILITY_JSON`` when that variable names a file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxforge.config import Config, SourceConfig, config_from_dict
from fluxforge.segments import Envelope, iter_lines, parse_envelope
from tests.reliability.figures import FIGURES, record_figures

REPO = Path(__file__).resolve().parents[2]
# 2024-01-02T03:00:00Z: a fixed past hour, so seal records get deterministic timestamps
T0_NS = 1_704_164_400 * 1_000_000_000


__all__ = ["record_figures"]


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, values in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    out = os.environ.get("FLUXFORGE_RELIABILITY_JSON")
    if out:
        Path(out).write_text(json.dumps(FIGURES, indent=2, sort_keys=True))


class StepClock:
    """A deterministic clock: T0 + n * step for the n-th call."""

    def __init__(self, start: int = T0_NS, step_ns: int = 2_000_000) -> None:
        self.now = start - step_ns
        self.step = step_ns

    def __call__(self) -> int:
        self.now += self.step
        return self.now


def make_synthetic_segments(
    root: Path, messages: int, seed: int = 7, max_bytes: int = 1 << 30, source: str = "syn"
) -> list[Path]:
    """Sealed segments of the synthetic market (Coinbase Advanced Trade shapes: L2 snapshot and
    updates, trades, tickers for 3 symbols) with timestamps from a fixed clock. Returns them."""
    from ingestion_daemon.sources.synthetic import SyntheticSource
    from ingestion_daemon.writer import SegmentWriter

    cfg = config_from_dict(
        {
            "storage": {"base_dir": str(root)},
            "ingestion": {"segment_max_bytes": max_bytes, "flush_max_lines": 5000},
        },
        environ={},
    )
    writer = SegmentWriter(cfg, source, default_ex="coinbase", live=False, clock=StepClock())
    writer.open()
    src_cfg = SourceConfig(
        name=source, type="synthetic", rate=1e9, seed=seed, max_messages=messages
    )
    asyncio.run(SyntheticSource(src_cfg, cfg).run(writer, asyncio.Event()))
    writer.close()
    return ready_files(root, source)


def ready_files(root: Path, source: str, state: str = "ready") -> list[Path]:
    return sorted((root / "raw" / state / source).glob("segment_*.ndjson"))


def read_envelopes(files: list[Path]) -> list[Envelope]:
    return [parse_envelope(line) for path in files for _, line in iter_lines(path.read_bytes())]


def tree_bytes(base: Path) -> dict[str, bytes]:
    """Every file under `base` (relative POSIX path -> bytes)."""
    if not base.is_dir():
        return {}
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def load(data: dict[str, Any]) -> Config:
    return config_from_dict(data, environ={})


def clean_env(**extra: str) -> dict[str, str]:
    """The test process environment without FLUXFORGE_* overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    env.update(extra)
    return env


def fluxforge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fluxforge.cli", *args]


def daemon_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ingestion_daemon", "--config", str(config), *args]


def popen(cmd: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env or clean_env(),
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=kw.pop("stderr", subprocess.PIPE),
        start_new_session=True,
        **kw,
    )


@pytest.fixture(scope="session")
def synthetic_input(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """~1.3 MB of synthetic feed as 4 sealed segments (shared, read-only input)."""
    root = tmp_path_factory.mktemp("synthetic-input")
    return make_synthetic_segments(root, messages=4000, max_bytes=400_000)
