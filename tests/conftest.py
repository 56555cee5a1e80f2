"""Shared fixtures: the real exchange captures, temp configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CAPTURES_ENV = "FLUXFORGE_CAPTURES"
DEFAULT_CAPTURES = REPO.parent / "shared" / "data" / "captures"


def captures_dir() -> Path:
    """The captures folder, or skip (fail under CI=true) with how to get it."""
    path = Path(os.environ.get(CAPTURES_ENV) or DEFAULT_CAPTURES)
    if not (path.is_dir() and any(path.glob("*/*"))):
        msg = (
            f"exchange captures not found at {path}: set {CAPTURES_ENV} to the folder holding "
            "COINBASE/, BINANCE_FUTURES/, KRAKEN/, OKX/, BITGET/ (shared/data/captures of the "
            "FluxForge workspace; originally cryptofeed's sample_data)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def captures() -> Path:
    return captures_dir()


# Real PostgreSQL / S3 servers for integration tests (tests/_services.py).
pytest_plugins = ["_services"]
