"""Captures (or edited copies of them) replayed by the ingestion daemon (replay source, speed 0)
into ``root/data/raw/ready/replay``, for tests that then run the refinery in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def config(root: Path, inputs: str) -> Path:
    """A config with local storage under root/data and one replay source reading `inputs`."""
    cfg = {
        "storage": {"backend": "local", "base_dir": str(root / "data")},
        "sources": [{"name": "replay", "type": "replay", "path": inputs, "speed": 0}],
    }
    path = root / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def replay(root: Path, inputs: str) -> Path:
    """Run the daemon over `inputs` (a glob) until the end; returns the config path."""
    path = config(root, inputs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", "ingest", "--config", str(path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return path
