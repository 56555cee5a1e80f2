"""Progress bars: shown on a terminal only, each step advancing the count with its message."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from fluxforge import progress


def test_progress_is_off_when_quiet_or_not_a_terminal() -> None:
    # pytest captures stderr: not a terminal
    assert progress.enabled(quiet=False) is False
    assert progress.enabled(quiet=True) is False


def test_progress_off_logs_each_step(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="fluxforge.progress"),
        progress.bar("process", 2, "segments", show=False) as step,
    ):
        step("okx/segment_1: 10 lines")
        step("okx/segment_2: 12 lines")
    assert [r.getMessage() for r in caplog.records] == [
        "okx/segment_1: 10 lines", "okx/segment_2: 12 lines",
    ]  # fmt: skip


def test_progress_bar_counts_steps_with_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(
        progress, "_console", lambda: Console(file=out, force_terminal=True, width=160)
    )
    with progress.bar("history", 3, "days", show=True) as step:
        for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
            step(f"{day}: 5 trades")
    text = out.getvalue()
    assert "history" in text and "3/3" in text and "2024-03-03: 5 trades" in text
