"""Lifecycle rotation on a real PostgreSQL server: aged days -> cold Parquet, partitions dropped,
and nothing lost when the server is stopped hard at any step."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from hot_lake import LAYOUT, build_lake, config
from psycopg import sql

from fluxforge.hot import HotStore, from_csv, load_lake
from fluxforge.lifecycle import STEPS, cold_key, rotate

pytestmark = pytest.mark.services

TODAY = date(2024, 3, 10)
DAYS = [TODAY - timedelta(days=n) for n in (6, 5, 1, 0)]
OLD = DAYS[:2]


def _today() -> date:
    return datetime.now(UTC).date()


def _hot_rows_with_day(hot: HotStore) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    with hot.connect() as conn:
        for table in hot.tables:
            rows = Counter()
            for day in hot._days(conn, table):
                raw = hot.export_csv(conn, table, sql.SQL("day = %s"), (day,))
                rows.update((day, *t) for t in _tuples(from_csv(raw, hot.columns(table))))
            out[table] = rows
    return out


def _cold_rows(storage, hot: HotStore, days: list[date]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for table in hot.tables:
        rows = Counter()
        for day in days:
            key = cold_key(LAYOUT, table, day)
            if storage.exists(key):
                data = pq.read_table(io.BytesIO(storage.read_bytes(key)))
                rows.update((day, *t) for t in _tuples(data))
        out[table] = rows
    return out


def _tuples(data) -> list[tuple]:
    cols = [data.column(n).to_pylist() for n in data.column_names]
    return [
        tuple(tuple(v) if isinstance(v, list) else v for v in row)
        for row in zip(*cols, strict=True)
    ]


def _setup(tmp_path: Path, dsn: str):
    storage = build_lake(tmp_path, DAYS, segments=2, lines=15)
    cfg = config(tmp_path, dsn, hot_days=3)
    load_lake(cfg, dsn, hot_days=30, today=TODAY)
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    return storage, cfg, hot


def _assert_exactly_once(before: dict[str, Counter], storage, hot: HotStore) -> None:
    """Every row of `before` is in hot ∪ cold; a day in both holds the same rows in both."""
    hot_now = _hot_rows_with_day(hot)
    cold_now = _cold_rows(storage, hot, DAYS)
    for table, rows in before.items():
        hot_days = {r[0] for r in hot_now[table]}
        merged = Counter(hot_now[table])
        for row, n in cold_now[table].items():
            if row[0] in hot_days:
                assert hot_now[table][row] == n, f"{table} {row[0]}: hot and cold differ"
            else:
                merged[row] += n
        assert merged == rows, f"{table}: hot ∪ cold != the rows before the rotation"
        assert max(merged.values(), default=1) == 1


def test_rotate_moves_aged_days_to_cold_and_drops_partitions(tmp_path: Path, pg_db: str) -> None:
    storage, cfg, hot = _setup(tmp_path, pg_db)
    before = _hot_rows_with_day(hot)
    counts = {t: sum(1 for r in before[t] if r[0] in OLD) for t in hot.tables}

    dry = rotate(cfg, pg_db, dry_run=True, today=TODAY)
    assert dry["days"] == [d.isoformat() for d in OLD]
    assert dry["rows"] == counts
    assert hot.days("trades") == DAYS  # the dry run changed nothing
    assert not storage.exists(cold_key(LAYOUT, "trades", OLD[0]))

    result = rotate(cfg, pg_db, today=TODAY)
    assert result["partitions_dropped"] == len(hot.tables) * len(OLD)
    assert result["days"] == [d.isoformat() for d in OLD]
    assert result["rows"] == counts
    assert result["bytes_written"] > 0 and result["cold_reused"] == 0
    assert sorted(result["analyzed"]) == sorted(hot.tables)
    for table in hot.tables:
        assert hot.days(table) == DAYS[2:]
        for day in OLD:
            assert storage.exists(f"cold/{table}/year=2024/month=03/day={day.day:02d}/data.parquet")
    _assert_exactly_once(before, storage, hot)

    again = rotate(cfg, pg_db, today=TODAY)
    assert again["partitions_dropped"] == 0 and again["rotated"] == []
    assert sorted(again["analyzed"]) == sorted(hot.tables)  # parents analyzed on every run


def test_rotate_reuses_matching_cold_copy_and_rewrites_a_stale_one(
    tmp_path: Path, pg_db: str
) -> None:
    storage, cfg, hot = _setup(tmp_path, pg_db)
    before = _hot_rows_with_day(hot)
    stale = cold_key(LAYOUT, "quotes", OLD[0])
    storage.write_bytes(stale, b"not parquet from an older run")  # overwritten, never trusted
    keep = {}

    def stop_before_drop(step: str, table: str, day: date) -> None:
        if step == "drop":
            keep["key"] = cold_key(LAYOUT, table, day)
            raise RuntimeError("interrupted before the first drop")

    with pytest.raises(RuntimeError, match="interrupted"):
        rotate(cfg, pg_db, today=TODAY, hook=stop_before_drop)
    result = rotate(cfg, pg_db, today=TODAY)
    assert result["cold_reused"] == 1  # the copy written before the interruption
    assert pq.read_metadata(io.BytesIO(storage.read_bytes(stale))).num_rows > 0
    _assert_exactly_once(before, storage, hot)


def test_rotate_refuses_to_drop_when_cold_copy_mismatches(tmp_path: Path, pg_db: str) -> None:
    storage, cfg, hot = _setup(tmp_path, pg_db)

    def corrupt(step: str, table: str, day: date) -> None:
        if step == "verify":
            storage.write_bytes(cold_key(LAYOUT, table, day), b"torn")

    with pytest.raises(Exception, match=r"cold|Parquet|parquet"):
        rotate(cfg, pg_db, today=TODAY, hook=corrupt)
    assert hot.days("bars_1h") == DAYS  # nothing dropped


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_rotate_pg_stopped_hard_at_each_step_loses_nothing(
    tmp_path: Path, pg_server, pg_db: str, step: str
) -> None:
    storage, cfg, hot = _setup(tmp_path, pg_db)
    before = _hot_rows_with_day(hot)
    calls = Counter()

    def crash(at: str, table: str, day: date) -> None:
        calls[at] += 1
        # crash in the middle of the job: at the 3rd occurrence (the 1st for analyze)
        if at == step and calls[at] == (1 if step == "analyze" else 3):
            pg_server.stop("immediate")

    with pytest.raises(psycopg.Error):
        rotate(cfg, pg_db, today=TODAY, hook=crash)
    assert not pg_server.running()
    pg_server.start()
    _assert_exactly_once(before, storage, hot)

    rotate(cfg, pg_db, today=TODAY)
    for table in hot.tables:
        assert hot.days(table) == DAYS[2:]
    _assert_exactly_once(before, storage, hot)
    cold = _cold_rows(storage, hot, OLD)
    assert all(sum(cold[t].values()) == sum(1 for r in before[t] if r[0] in OLD) for t in cold)


@pytest.mark.slow
def test_rotate_cli_dry_run_json_and_disabled(tmp_path: Path, pg_db: str) -> None:
    build_lake(tmp_path / "data", [_today() - timedelta(days=3), _today()], segments=1)
    cfg = {
        "storage": {"backend": "local", "base_dir": str(tmp_path / "data")},
        "hot_store": {"dsn": pg_db},
        "lifecycle": {"hot_intervals": ["1h"], "hot_days": 2, "enabled": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "fluxforge.cli", *args, "--config", "c.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    cli("hot", "load", "--hot-days", "5")
    assert "enabled is false" in cli("rotate").stdout
    plan = json.loads(cli("rotate", "--dry-run", "--force", "--json").stdout)
    old = (_today() - timedelta(days=3)).isoformat()
    assert plan["days"] == [old] and plan["rows"]["trades"] > 0
    out = json.loads(cli("rotate", "--force", "--json").stdout)
    assert out["partitions_dropped"] == 4 and out["rows"] == plan["rows"]
    assert "analyzed" in json.loads(cli("rotate", "--analyze-only", "--force", "--json").stdout)


def test_rotate_cold_copy_on_s3(tmp_path: Path, pg_db: str, s3_env) -> None:
    from fluxforge.config import S3Settings
    from fluxforge.storage.s3 import S3Storage

    _, cfg, hot = _setup(tmp_path, pg_db)
    before = _hot_rows_with_day(hot)
    cold = S3Storage(
        s3_env.bucket("cold"), S3Settings(endpoint_url=s3_env.endpoint_url, region=s3_env.region)
    )
    result = rotate(cfg, pg_db, today=TODAY, storage=cold)
    assert result["partitions_dropped"] == len(hot.tables) * len(OLD)
    assert cold.exists(cold_key(LAYOUT, "trades", OLD[0]))
    _assert_exactly_once(before, cold, hot)
    # a re-run with the partitions back (re-loaded) reuses the cold copies on S3
    load_lake(cfg, pg_db, hot_days=30, today=TODAY)
    again = rotate(cfg, pg_db, today=TODAY, storage=cold)
    assert again["cold_reused"] == again["partitions_dropped"] > 0
    assert again["bytes_written"] == 0


def test_rotate_while_another_rotation_runs_is_skipped(tmp_path: Path, pg_db: str) -> None:
    from fluxforge.lifecycle import ROTATION_LOCK

    _, cfg, hot = _setup(tmp_path, pg_db)
    with psycopg.connect(pg_db, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (ROTATION_LOCK,))
        out = rotate(cfg, pg_db, today=TODAY)
        assert out == {"skipped": "another rotation is running on this hot store"}
        assert hot.days("trades") == DAYS
    assert rotate(cfg, pg_db, today=TODAY)["partitions_dropped"] > 0
