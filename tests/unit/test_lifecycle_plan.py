"""lifecycle.plan(): which hot day partitions rotate (pure, no database)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fluxforge.config import PathNames
from fluxforge.hot import window_start
from fluxforge.lifecycle import plan
from fluxforge.storage import Layout

LAYOUT = Layout(PathNames(cold_dir="coldstore"))
TODAY = date(2024, 3, 31)


def _inv(*ages: int) -> dict[str, dict[date, int]]:
    days = {TODAY - timedelta(days=a): 10 + a for a in ages}
    return {"trades": days, "bars_1m": dict(days)}


def test_plan_days_older_than_hot_days_rotate_oldest_first() -> None:
    p = plan(_inv(0, 1, 29, 30, 45), TODAY, 30, LAYOUT)
    assert p.first_hot_day == TODAY - timedelta(days=29)
    assert [(t.day, t.table) for t in p.tasks] == [
        (TODAY - timedelta(days=45), "bars_1m"),
        (TODAY - timedelta(days=45), "trades"),
        (TODAY - timedelta(days=30), "bars_1m"),
        (TODAY - timedelta(days=30), "trades"),
    ]
    assert p.tasks[-1].cold_key == "coldstore/trades/year=2024/month=03/day=01/data.parquet"
    out = p.to_dict()
    assert out["rows"] == {"trades": 95, "bars_1m": 95}
    assert out["days"] == ["2024-02-15", "2024-03-01"]


def test_plan_nothing_inside_window_is_empty() -> None:
    assert plan(_inv(0, 1, 2), TODAY, 3, LAYOUT).tasks == []
    assert plan({}, TODAY, 1, LAYOUT).tasks == []


def test_plan_hot_days_one_keeps_only_today() -> None:
    p = plan(_inv(0, 1), TODAY, 1, LAYOUT)
    assert {t.day for t in p.tasks} == {TODAY - timedelta(days=1)}


def test_window_start_rejects_zero_days() -> None:
    with pytest.raises(ValueError, match="hot_days=0"):
        window_start(TODAY, 0)
