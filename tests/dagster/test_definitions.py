"""The code location loads from any config and holds every asset, check, sensor and schedule."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_helpers import write_config

from fluxforge.config import load_config
from fluxforge_dagster.defs.resources import (
    LakeDeltaIOManager,
    build_resources,
)

ASSETS = {"trades", "book_deltas", "book_snapshots", "quotes", "quarantine", "gap_ledger"}


@pytest.fixture
def loaded(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLUXFORGE_CONFIG", str(write_config(tmp_path, str(tmp_path / "none*"))))
    from fluxforge_dagster.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    return d.get_repository_def()


def test_definitions_config_from_env_all_pieces_present(loaded):
    keys = {k.to_user_string() for k in loaded.asset_graph.get_all_asset_keys()}
    assert keys >= ASSETS | {"coverage"}
    checks = {k.name for k in loaded.asset_graph.asset_check_keys}
    assert {f"{t}_schema_valid" for t in ASSETS} <= checks
    assert {"books_not_crossed", "trade_ids_unique", "trades_within_book", "books_not_stale",
            "lines_reconciled", "coverage_no_gaps"} <= checks  # fmt: skip
    sensor = loaded.get_sensor_def("ready_segments_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 1
    assert "coverage_daily_0015" in {s.name for s in loaded.schedule_defs}
    assert {"refinery_job", "coverage_job"} <= {j.name for j in loaded.get_all_jobs()}


def test_definitions_partitions_daily_by_configured_source(loaded):
    parts = loaded.get_job("refinery_job").partitions_def
    assert isinstance(parts, dg.MultiPartitionsDefinition)
    dims = {d.name: d.partitions_def for d in parts.partitions_defs}
    assert dims["source"].get_partition_keys() == ["replay", "synthetic"]
    assert isinstance(dims["date"], dg.DailyPartitionsDefinition)
    assert dims["date"].get_first_partition_key() == "2021-01-01"  # as configured


def test_partitions_start_by_default_at_the_first_day_with_data(tmp_path: Path, clean_env: None):
    from fluxforge.segments import segment_name
    from fluxforge.storage import Layout, LocalStorage
    from fluxforge_dagster.defs.partitions import refinery_partitions

    def first_key(root: Path) -> str:
        cfg = load_config(write_config(root, "x", dagster={"partitions_start_date": None}))
        dims = {d.name: d.partitions_def for d in refinery_partitions(cfg).partitions_defs}
        return dims["date"].get_first_partition_key()

    from datetime import UTC, datetime

    empty = tmp_path / "empty"
    empty.mkdir()
    assert first_key(empty) == datetime.now(UTC).date().isoformat()  # nothing yet: today
    cfg = load_config(write_config(tmp_path, "x"), environ={})
    layout = Layout.of(cfg.storage.ingestion)
    hour = datetime(2024, 3, 1, 5, tzinfo=UTC)
    name = segment_name(hour, 1)
    LocalStorage(cfg.storage.ingestion.base_dir).write_bytes(
        layout.segment("archive", "replay", name), b""
    )
    assert first_key(tmp_path) == "2024-03-01"


def test_build_resources_backend_from_config_local_or_s3(tmp_path: Path, clean_env: None):
    cfg = load_config(write_config(tmp_path, "x"), environ={})
    local = build_resources(cfg)["lake_io_manager"]
    assert isinstance(local, LakeDeltaIOManager) and local.config_path == cfg.source_path
    s3 = load_config(
        write_config(
            tmp_path,
            "x",
            storage={"etl_storage_output": {"backend": "s3", "base_dir": "lake-bucket"}},
        ),
        environ={},
    )
    io = build_resources(s3)["lake_io_manager"]
    assert isinstance(io, LakeDeltaIOManager) and io.config_path == s3.source_path
    from fluxforge.lake import Lake

    assert Lake.of(s3).uri("coverage").startswith("s3://lake-bucket/")
