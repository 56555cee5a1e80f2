"""materialize() of the refinery assets into tmp_path; end to end through the sensor; backfill."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_helpers import lake_bytes, link_captures, ready_names, replay, write_config

from fluxforge import refinery
from fluxforge.config import load_config
from fluxforge_dagster.definitions import defs as load_defs
from fluxforge_dagster.defs.assets import build_assets
from fluxforge_dagster.defs.resources import build_resources
from fluxforge_dagster.defs.sensors import build_sensor


def _drop_days_before(cfg, day: str) -> None:
    """Per-source order: a source's segments of earlier days must not wait in ready/ while a
    later day's are refined (they would hold the source); these tests are about one day."""
    from fluxforge.storage import Layout, open_storage

    store, layout = open_storage(cfg.storage.etl_input), Layout.of(cfg.storage.etl_input)
    for ref in refinery.list_segments(cfg, "ready"):
        if ref.date < day:
            store.delete(layout.segment("ready", ref.source, ref.name))


def _materialize(cfg, partition: str, segments: list[str] | None, instance=None):
    config = {"ops": {"refinery": {"config": {"segments": segments or []}}}}
    return dg.materialize(
        build_assets(cfg),
        resources=build_resources(cfg),
        partition_key=partition,
        run_config=config,
        instance=instance,
    )


def test_materialize_claimed_segments_writes_parquet_rows_and_coverage(small_replay, tmp_path):
    _, cfg = small_replay
    _drop_days_before(cfg, "2022-04-07")
    refs = [r for r in refinery.list_segments(cfg, "ready") if r.date == "2022-04-07"][:3]
    assert all(refinery.claim(cfg, r) for r in refs)
    result = _materialize(cfg, "2022-04-07|replay", [r.name for r in refs])
    assert result.success
    mats = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    files = sorted((tmp_path / "data/processed/book_deltas").rglob("part-*.parquet"))
    assert files, "book_deltas parts written"
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert mats["book_deltas"]["rows"].value == rows > 0
    # the Delta table's own view: committed version, rows of the date, URI and schema
    assert mats["book_deltas"]["dagster/row_count"].value == rows
    assert mats["book_deltas"]["delta_version"].value >= 1
    assert mats["book_deltas"]["dagster/uri"].value.endswith("processed/book_deltas")
    schema = mats["book_deltas"]["dagster/column_schema"].value
    assert {c.name for c in schema.columns} >= {"ts_recv", "price", "exchange", "date"}
    assert mats["quarantine"]["lines"].value > 0
    assert {"bytes", "quarantined", "gaps", "lag_s"} <= set(mats["trades"])
    # what the UI shows: row count and column schema, human size and lag, owners elsewhere
    trades = mats["trades"]
    assert trades["dagster/row_count"].value == trades["rows"].value
    columns = [c.name for c in trades["dagster/column_schema"].value.columns]
    assert columns[:4] == ["ts_event", "ts_recv", "venue_symbol", "trade_id"]
    assert trades["size"].value.endswith("B") and trades["lag"].value[0].isdigit()
    heatmap = mats["coverage"]["heatmap"].value
    assert heatmap.startswith("![coverage heatmap](data:image/png;base64,iVBOR")  # a PNG
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["book_deltas_schema_valid"] and checks["lines_reconciled"]
    assert checks["books_not_crossed"] and checks["trade_ids_unique"]
    from deltalake import DeltaTable

    table = DeltaTable(tmp_path / "data/processed/coverage").to_pyarrow_table(
        partitions=[("date", "=", "2022-04-07"), ("source", "=", "replay")]
    )
    assert set(table.column("channel").to_pylist()) >= {"book"}
    assert ready_names(tmp_path, state="archive") == [r.name for r in refs]


def test_materialize_retry_after_archive_not_processed_twice(small_replay, tmp_path):
    _, cfg = small_replay
    _drop_days_before(cfg, "2022-04-07")
    refs = [r for r in refinery.list_segments(cfg, "ready") if r.date == "2022-04-07"][:2]
    assert all(refinery.claim(cfg, r) for r in refs)
    names = [r.name for r in refs]
    assert _materialize(cfg, "2022-04-07|replay", names).success
    before = lake_bytes(tmp_path)
    again = _materialize(cfg, "2022-04-07|replay", names)  # a re-executed run
    assert again.success
    assert lake_bytes(tmp_path) == before
    meta = again.get_asset_materialization_events()[0].event_specific_data.materialization
    assert meta.metadata["segments_already_processed"].value == 2
    assert all(e.passed for e in again.get_asset_check_evaluations() if "schema" in e.check_name)


def _drain_with_sensor(path: Path, cfg) -> int:
    """Tick the sensor and execute every requested run in process until nothing is ready."""
    os.environ["FLUXFORGE_CONFIG"] = str(path)
    definitions = load_defs()
    job = definitions.get_repository_def().get_job("refinery_job")
    sensor = build_sensor(cfg)
    instance = dg.DagsterInstance.ephemeral()
    cursor, runs = None, 0
    from fluxforge_dagster.defs.resources import FluxForgeResource

    for _ in range(50):
        ctx = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=definitions,
            resources={"fluxforge": FluxForgeResource(config_path=str(path))},
        )
        result = sensor.evaluate_tick(ctx)
        cursor = result.cursor
        if not result.run_requests:
            return runs
        for req in result.run_requests:
            done = job.execute_in_process(
                run_config=req.run_config,
                partition_key=req.partition_key,
                tags=req.tags,
                instance=instance,
            )
            assert done.success
            runs += 1
    raise AssertionError("the sensor never ran dry")


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory, captures: Path):
    """All captures replayed twice: one copy refined through the sensor and in-process runs,
    the other by `fluxforge process`. Returns (root, config, segments, lake via the CLI)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FLUXFORGE_")}
    try:
        roots = {}
        for name in ("dagster", "cli"):
            root = tmp_path_factory.mktemp(name)
            path = write_config(root, link_captures(root, captures, None))
            cfg = load_config(path, environ={})
            assert replay(cfg) == 0
            roots[name] = (root, path, cfg)
        root, path, cfg = roots["dagster"]
        segments = ready_names(root)
        runs = _drain_with_sensor(path, cfg)
        assert runs >= len(segments) / cfg.dagster.max_segments_per_run
        croot, cpath, _ = roots["cli"]
        done = subprocess.run(
            [sys.executable, "-m", "fluxforge.cli", "process", "--config", str(cpath)],
            cwd=croot,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        yield root, cfg, segments, lake_bytes(croot)
    finally:
        os.environ.pop("FLUXFORGE_CONFIG", None)
        os.environ.update(saved)


@pytest.mark.slow
def test_end_to_end_replay_sensor_runs_equal_fluxforge_process(drained):
    root, _, segments, via_cli = drained
    assert ready_names(root, state="archive") == segments
    via_dagster = lake_bytes(root)
    assert via_dagster.keys() == via_cli.keys() and len(via_dagster) > 20
    differ = sorted(k for k in via_dagster if via_dagster[k] != via_cli[k])
    assert not differ, differ[:5]


@pytest.mark.slow
def test_backfill_partitions_rebuilt_from_archive_identical(drained):
    root, cfg, segments, via_cli = drained
    # every (date, source) partition rebuilt from the archived raw segments, one run per
    # partition (BackfillPolicy.multi_run(1)), with no sensor config -> the same lake
    shutil.rmtree(root / "data" / "processed")
    dates = sorted({f"{n[8:12]}-{n[12:14]}-{n[14:16]}" for n in segments})
    instance = dg.DagsterInstance.ephemeral()
    for date in dates:
        assert _materialize(cfg, f"{date}|replay", None, instance=instance).success
    rebuilt = lake_bytes(root)
    differ = sorted(k for k in via_cli if via_cli[k] != rebuilt.get(k))
    assert not differ and rebuilt.keys() == via_cli.keys(), differ[:5]
