"""Dagster-layer fixtures (helpers in dagster_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster_helpers import SMALL_CAPTURES, link_captures, ready_names, replay, write_config

from fluxforge.config import Config, load_config


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FLUXFORGE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def small_replay(tmp_path: Path, captures: Path, clean_env: None) -> tuple[Path, Config]:
    """(config path, config) with a few small captures sealed into several ready segments."""
    path = write_config(tmp_path, link_captures(tmp_path, captures, SMALL_CAPTURES))
    cfg = load_config(path, environ={})
    assert replay(cfg) == 0
    assert len(ready_names(tmp_path)) >= 3, "the replay should seal several segments"
    return path, cfg
