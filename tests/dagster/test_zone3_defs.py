"""Dagster pieces of the hot/cold zone: SQL model assets and their checks and sensor, hot-store
assets and sensor, the rotation job and its 02:00 schedule, the tiering job.

The lake is built once per module by the real refinery (through its Dagster asset, into an
ephemeral instance, so the sensors see real materialization events) from the OKX capture:
2022-05-13, one (date, source) partition `2022-05-13|replay`, 69 trades, 25 quotes, 1 snapshot.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from dagster_helpers import link_captures, ready_names, replay, write_config
from psycopg import sql

from fluxforge import refinery, sql_models
from fluxforge.config import Config, config_from_dict, load_config
from fluxforge.hot import HotStore
from fluxforge.lifecycle import cold_key
from fluxforge.storage import Layout
from fluxforge_dagster.defs.assets import build_assets
from fluxforge_dagster.defs.hot_store import (
    HOT_ASSET,
    HOT_JOB,
    build_hot_assets,
    evaluate_hot_tick,
    redact_dsn,
)
from fluxforge_dagster.defs.lifecycle import ROTATION_OP, build_rotation_schedule, rotation_job
from fluxforge_dagster.defs.resources import FluxForgeResource, build_resources
from fluxforge_dagster.defs.sql_models import (
    SQL_JOB,
    build_sql_assets,
    dbt_resource,
    evaluate_sql_tick,
)
from fluxforge_dagster.defs.tiering import tiering_job

DAY = "2022-05-13"
PARTITION = f"{DAY}|replay"
LAKE_TRADES, LAKE_QUOTES, LAKE_SNAPSHOTS = 69, 25, 1


class Lake:
    def __init__(self, root: Path, path: Path, cfg: Config, instance: dg.DagsterInstance):
        self.root, self.path, self.cfg, self.instance = root, path, cfg, instance
        self.segments = ready_names(root, state="archive")


def _okx_config(root: Path, captures: Path, **sections) -> Path:
    inputs = link_captures(root, captures, ("OKX/OKX.ws.1.0",))
    # a hot window wide enough to hold 2022 forever; tiering's warm dir inside the test root
    sections.setdefault("lifecycle", {"hot_days": 100_000})
    sections.setdefault("tiering", {"warm_dir": str(root / "warm")})
    return write_config(root, inputs, **sections)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> Lake:
    root = tmp_path_factory.mktemp("zone3")
    path = _okx_config(root, captures)
    cfg = load_config(path, environ={})
    assert replay(cfg) == 0
    refs = refinery.list_segments(cfg, "ready")
    assert refs and all(refinery.claim(cfg, r) for r in refs)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [build_assets(cfg)[0]],
        resources=build_resources(cfg),
        partition_key=PARTITION,
        run_config={"ops": {"refinery": {"config": {"segments": [r.name for r in refs]}}}},
        instance=instance,
    )
    assert result.success
    return Lake(root, path, cfg, instance)


@pytest.fixture
def dsn_env(pg_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test database as the hot store, the way `fluxforge up` passes its server's DSN."""
    for key in [k for k in os.environ if k.startswith("FLUXFORGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FLUXFORGE_HOT_STORE__DSN", pg_db)
    return pg_db


def _repo(path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.RepositoryDefinition:
    from fluxforge_dagster.definitions import defs

    monkeypatch.setenv("FLUXFORGE_CONFIG", str(path))
    return defs().get_repository_def()


def _mats(result) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        return conn.execute(query).fetchone()[0]


# -- definitions ---------------------------------------------------------------------------------


@pytest.mark.slow  # the first load of the whole code location imports everything
def test_definitions_with_dsn_register_sql_hot_rotation_tiering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = write_config(tmp_path, str(tmp_path / "none"), tiering={"warm_dir": str(tmp_path)})
    monkeypatch.setenv("FLUXFORGE_HOT_STORE__DSN", "postgresql://postgres@127.0.0.1:9/nowhere")
    repo = _repo(path, monkeypatch)
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"bars_1m", "bars_1d", "coverage_daily", "stg_trades"} <= keys
    assert {"hot/trades", "hot/quotes", "hot/book_snapshots", "hot/bars_1m"} <= keys
    assert {"sql_models_job", "hot_store_job", "rotation_job", "tiering_job"} <= set(repo.job_names)
    assert {"rotation_daily_0200", "tiering_schedule"} <= {s.name for s in repo.schedule_defs}
    sensors = {s.name: s for s in repo.sensor_defs}
    assert {"sql_models_sensor", "hot_store_sensor", "ready_segments_sensor"} <= set(sensors)
    assert sensors["sql_models_sensor"].default_status == dg.DefaultSensorStatus.RUNNING


def test_definitions_without_dsn_leave_out_hot_assets_and_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    path = write_config(tmp_path, str(tmp_path / "none"), tiering={"warm_dir": str(tmp_path)})
    monkeypatch.delenv("FLUXFORGE_HOT_STORE__DSN", raising=False)
    repo = _repo(path, monkeypatch)
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "bars_1m" in keys and not any(k.startswith("hot/") for k in keys)
    assert "rotation_job" not in repo.job_names and "tiering_job" in repo.job_names
    assert "hot_store.dsn is not set" in caplog.text


def test_redact_dsn_drops_password():
    assert "secret" not in redact_dsn("postgresql://u:secret@db:5432/x")
    assert redact_dsn("postgresql://postgres@127.0.0.1:5433/f") == (
        "postgresql://postgres@127.0.0.1:5433/f"
    )


# -- SQL models ----------------------------------------------------------------------------------


def _manifest_nodes(cfg: Config) -> dict[str, dict]:
    import json

    manifest = json.loads(sql_models.manifest(cfg).read_text())
    return {**manifest["nodes"], **manifest["sources"]}


def test_sql_assets_one_per_model_deps_equal_dbt_graph_and_tests_are_checks(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, "x"), environ={})
    nodes = _manifest_nodes(cfg)
    specs = {}
    checks: dict[str, set[str]] = {}
    partitioned = {}
    for a in build_sql_assets(cfg):
        for spec in a.specs:
            specs[spec.key.to_user_string()] = {d.asset_key.to_user_string() for d in spec.deps}
            partitioned[spec.key.to_user_string()] = a.partitions_def is not None
        for c in a.check_specs:
            checks.setdefault(c.asset_key.to_user_string(), set()).add(c.name)
    models = {n["name"]: n for n in nodes.values() if n["resource_type"] == "model"}
    assert set(specs) == set(models)
    assert {"stg_trades", "bars_1m", "bars_1d", "coverage_daily", "book_stats_1h"} <= set(specs)
    for name, node in models.items():
        # a ref() is a dependency on that model, a source('lake', t) on the refinery's asset t
        want = {nodes[u]["name"] for u in node["depends_on"]["nodes"]}
        assert specs[name] == want, name
        assert partitioned[name] == (node["config"]["materialized"] == "incremental"), name
    assert {"trades"} == specs["stg_trades"]
    assert {"feed_stats"} == specs["stg_feed_stats"]  # the refinery's feed_stats lake asset
    assert {"stg_feed_stats"} == specs["feed_stats_hourly"] and partitioned["feed_stats_hourly"]
    tests = [n for n in nodes.values() if n["resource_type"] == "test"]
    attached = {}
    for test in tests:
        parents = test["depends_on"]["nodes"]
        # a generic test's model, else a singular test's only model, else its meta.dagster.ref
        owner = test.get("attached_node") or (parents[0] if len(parents) == 1 else None)
        ref = test["config"].get("meta", {}).get("dagster", {}).get("ref", {}).get("name")
        owner_name = ref or (nodes[owner]["name"] if owner else None)
        attached.setdefault(owner_name, set()).add(test["name"])
    assert None not in attached  # every test is the check of one model
    assert checks == attached
    assert "not_null_bars_1m_open" in checks["bars_1m"]
    assert "assert_bars_rollups_match_trades" in checks["bars_1d"]
    assert "assert_feed_stats_latency_ordered" in checks["feed_stats_hourly"]


def test_sql_marts_materialize_a_day_writes_partition_files_and_checks_pass(lake: Lake):
    marts = [a for a in build_sql_assets(lake.cfg) if a.partitions_def is not None]
    result = dg.materialize(
        marts,
        resources={"dbt": dbt_resource(lake.cfg)},
        partition_key=DAY,
        instance=lake.instance,
    )
    assert result.success
    assert {
        "bars_1m",
        "bars_5m",
        "bars_1h",
        "bars_1d",
        "coverage_daily",
        "feed_stats_hourly",
    } <= set(_mats(result))
    base = lake.root / "data/processed/models"
    files = sorted((base / "bars_1m").rglob("*.parquet"))
    assert [f.relative_to(base / "bars_1m").as_posix() for f in files] == [
        f"date={DAY}/exchange=okx/symbol=BTC-USDT/data_0.parquet"
    ]
    bars = pq.read_table(files[0])
    assert sum(bars.column("trade_count").to_pylist()) == LAKE_TRADES
    daily = pq.read_table(next((base / "bars_1d").rglob("*.parquet")))
    assert daily.column("trade_count").to_pylist() == [LAKE_TRADES]
    checks = result.get_asset_check_evaluations()
    assert len(checks) >= 20 and all(c.passed for c in checks)
    assert "assert_bars_rollups_match_trades" in {c.check_name for c in checks}
    feeds = pq.read_table(sorted((base / "feed_stats_hourly").rglob("*.parquet")))
    assert {"trades", "quotes", "book"} <= set(feeds.column("channel").to_pylist())


def test_sql_sensor_requests_each_new_lake_date_once(lake: Lake):
    first = evaluate_sql_tick(lake.instance, None)
    assert [(r.partition_key, r.tags["fluxforge/sql_date"]) for r in first.run_requests] == [
        (DAY, DAY)
    ]
    again = evaluate_sql_tick(lake.instance, first.cursor)
    assert not again.run_requests and again.cursor == first.cursor


def _queued_run(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str]) -> str:
    """A not-yet-started run of `job_name` (a stand-in job of that name) carrying `tags`."""

    @dg.op
    def noop() -> None:
        pass

    @dg.job(name=job_name)
    def stand_in() -> None:
        noop()

    run = instance.create_run_for_job(stand_in, status=dg.DagsterRunStatus.NOT_STARTED, tags=tags)
    return run.run_id


def test_sql_sensor_holds_a_date_while_its_run_is_pending(lake: Lake):
    run_id = _queued_run(lake.instance, SQL_JOB, {"fluxforge/sql_date": DAY})
    try:
        held = evaluate_sql_tick(lake.instance, None)
        assert not held.run_requests and DAY in held.skip_reason.skip_message
    finally:
        lake.instance.delete_run(run_id)
    # the run is gone: the held date is requested from the cursor, with no new lake event
    freed = evaluate_sql_tick(lake.instance, held.cursor)
    assert [r.partition_key for r in freed.run_requests] == [DAY]


def test_hot_sensor_merges_batches_while_partition_is_busy(lake: Lake):
    run_id = _queued_run(lake.instance, HOT_JOB, {"fluxforge/hot_partition": PARTITION})
    try:
        held = evaluate_hot_tick(lake.cfg, lake.instance, None)
        assert not held.run_requests and PARTITION in held.skip_reason.skip_message
    finally:
        lake.instance.delete_run(run_id)
    freed = evaluate_hot_tick(lake.cfg, lake.instance, held.cursor)
    (request,) = freed.run_requests
    assert request.run_config["ops"][HOT_ASSET]["config"]["segments"] == lake.segments
    assert not evaluate_hot_tick(lake.cfg, lake.instance, freed.cursor).run_requests


def test_hot_sensor_reloads_whole_partition_after_a_failed_hot_run(lake: Lake):
    import json

    first = evaluate_hot_tick(lake.cfg, lake.instance, None)
    assert first.run_requests[0].run_config["ops"][HOT_ASSET]["config"]["segments"]
    cursor = json.loads(first.cursor)
    cursor["checked"] -= 5  # the previous look for failed runs was a few seconds ago
    run_id = _queued_run(lake.instance, HOT_JOB, {"fluxforge/hot_partition": PARTITION})
    try:
        lake.instance.report_run_failed(lake.instance.get_run_by_id(run_id))
        retry = evaluate_hot_tick(lake.cfg, lake.instance, json.dumps(cursor))
    finally:
        lake.instance.delete_run(run_id)
    (request,) = retry.run_requests
    assert request.run_config["ops"][HOT_ASSET]["config"]["segments"] == []  # whole partition
    assert request.partition_key == dg.MultiPartitionKey({"date": DAY, "source": "replay"})


# -- hot store -------------------------------------------------------------------------------


def test_hot_sensor_passes_the_refinery_batch_and_skips_days_outside_window(lake: Lake, tmp_path):
    tick = evaluate_hot_tick(lake.cfg, lake.instance, None)
    assert len(tick.run_requests) == 1
    request = tick.run_requests[0]
    assert request.partition_key == dg.MultiPartitionKey({"date": DAY, "source": "replay"})
    config = request.run_config["ops"][HOT_ASSET]["config"]
    assert config["segments"] == lake.segments and len(lake.segments) >= 2
    narrow = lake.cfg.model_copy(
        update={"lifecycle": lake.cfg.lifecycle.model_copy(update={"hot_days": 30})}
    )
    outside = evaluate_hot_tick(narrow, lake.instance, None)
    assert not outside.run_requests and "before the hot window" in outside.skip_reason.skip_message


@pytest.mark.services
def test_hot_store_materialize_loads_the_partition_once(lake: Lake, dsn_env: str):
    assets = build_hot_assets(lake.cfg)
    resources = {"fluxforge": FluxForgeResource(config_path=str(lake.path))}
    first = dg.materialize(
        assets,
        resources=resources,
        partition_key=PARTITION,
        run_config={"ops": {HOT_ASSET: {"config": {"segments": lake.segments}}}},
    )
    assert first.success
    mats = _mats(first)
    assert mats["hot/trades"]["rows_inserted"] == LAKE_TRADES == _count(dsn_env, "trades")
    assert mats["hot/quotes"]["rows_inserted"] == LAKE_QUOTES == _count(dsn_env, "quotes")
    assert _count(dsn_env, "book_snapshots") == LAKE_SNAPSHOTS
    assert mats["hot/bars_1m"]["rows_in_day"] == _count(dsn_env, "bars_1m") >= 1
    # a whole-partition reload (backfill: no batch) finds the same parts and adds nothing
    again = dg.materialize(assets, resources=resources, partition_key=PARTITION)
    assert again.success
    assert _mats(again)["hot/trades"]["rows_read"] == LAKE_TRADES
    assert _mats(again)["hot/trades"]["rows_inserted"] == 0
    assert _count(dsn_env, "trades") == LAKE_TRADES


# -- rotation ------------------------------------------------------------------------------------


@pytest.mark.services
def test_rotation_job_drops_aged_day_after_writing_cold_copy(lake: Lake, dsn_env: str):
    from fluxforge.hot import load_lake

    load_lake(lake.cfg, dsn_env, hot_days=100_000)
    store = HotStore(dsn_env, lake.cfg.lifecycle.hot_intervals)
    assert store.days("trades") == [date(2022, 5, 13)]
    result = rotation_job.execute_in_process(
        run_config={"ops": {ROTATION_OP: {"config": {"hot_days": 30, "today": "2022-06-30"}}}},
        resources={"fluxforge": FluxForgeResource(config_path=str(lake.path))},
    )
    assert result.success
    meta = {
        k: v.value
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
        for k, v in e.event_specific_data.metadata.items()
    }
    assert meta["days"] == DAY and meta["rows"]["trades"] == LAKE_TRADES
    assert meta["partitions_dropped"] == 6  # trades, quotes, book_snapshots, bars_1m/1h/1d
    assert meta["bytes_written"] > 0
    assert store.days("trades") == [] and store.count("trades") == 0
    key = cold_key(Layout.of(lake.cfg.storage.etl_output), "trades", date(2022, 5, 13))
    cold = lake.root / "data" / key
    assert pq.read_metadata(cold).num_rows == LAKE_TRADES


def test_rotation_schedule_fires_at_0200_in_configured_timezone(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, "x", lifecycle={"timezone": "Asia/Tokyo"}), environ={})
    schedule = build_rotation_schedule(cfg)
    assert schedule.name == "rotation_daily_0200"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Tokyo"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # 02:00 in Tokyo on the 16th is 17:00 UTC on the 15th: the rotation counts from the 16th
    tick = datetime(2024, 1, 16, 2, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert tick.astimezone(UTC).day == 15
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=tick))
    (run,) = request.run_requests
    assert run.run_key == "rotation:2024-01-16"
    assert run.run_config == {"ops": {ROTATION_OP: {"config": {"today": "2024-01-16"}}}}


def test_rotation_schedule_disabled_is_stopped_and_skips(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, "x", lifecycle={"enabled": False}), environ={})
    schedule = build_rotation_schedule(cfg)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    tick = datetime(2024, 1, 16, 2, 0, tzinfo=UTC)
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=tick))
    assert not data.run_requests and "enabled is false" in data.skip_message


# -- tiering -------------------------------------------------------------------------------------


def test_tiering_job_moves_archived_segments_to_warm(lake: Lake, tmp_path: Path, captures: Path):
    from fluxforge import tiering

    shutil.copytree(lake.root / "data", tmp_path / "data", symlinks=True)
    path = _okx_config(tmp_path, captures)
    cfg = load_config(path, environ={})
    assert yaml.safe_load(path.read_text())["tiering"]["warm_dir"] == str(tmp_path / "warm")
    result = tiering_job.execute_in_process(
        resources={"fluxforge": FluxForgeResource(config_path=str(path))}
    )
    assert result.success
    meta = {
        k: v.value
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
        for k, v in e.event_specific_data.metadata.items()
    }
    assert meta["moved"] == len(lake.segments) and meta["moved_to"] == {"warm": len(lake.segments)}
    assert ready_names(tmp_path, state="archive") == []
    found = tiering.locate(cfg, "replay", DAY)
    assert [loc.name for loc in found] == lake.segments
    assert {loc.tier for loc in found} == {"warm"}


# -- fluxforge up: the embedded hot store ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.services
def test_up_hot_store_embedded_server_under_data_dir_gives_dsn_and_stops():
    from _services import free_port

    from fluxforge.pgserver import find_bin_dir
    from fluxforge.up import start_hot_store, stop_hot_store

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh)")
    root = Path(tempfile.mkdtemp(prefix="fluxforge-up-pg-"))
    root.chmod(0o711)  # the server runs as an unprivileged user when tests run as root
    port = free_port()
    data = {"storage": {"backend": "local", "base_dir": str(root / "data")}}
    cfg = config_from_dict({**data, "hot_store": {"embedded_port": port}}, environ={})
    server = None
    try:
        server, dsn = start_hot_store(cfg)
        assert server is not None and server.data_dir == root / "data" / "postgres"
        assert dsn == server.dsn_for("fluxforge")  # role fluxforge; the password in a passfile
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "fluxforge"
        stop_hot_store(server)
        assert not server.running()
    finally:
        if server is not None:
            server.kill_leftovers()
        shutil.rmtree(root, ignore_errors=True)


def test_up_hot_store_external_dsn_starts_nothing(tmp_path: Path):
    from fluxforge.up import start_hot_store

    dsn = "postgresql://app@db.example:5432/market"
    cfg = config_from_dict(
        {"storage": {"base_dir": str(tmp_path)}, "hot_store": {"dsn": dsn}}, environ={}
    )
    assert start_hot_store(cfg) == (None, dsn)
    assert not (tmp_path / "postgres").exists()


def test_up_hot_store_unusable_dir_logs_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from fluxforge.pgserver import find_bin_dir
    from fluxforge.up import start_hot_store

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh)")
    if os.geteuid() != 0:
        pytest.skip("needs root: an untraversable parent only stops the server's own user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    cfg = config_from_dict(
        {"storage": {"base_dir": str(tmp_path)}, "hot_store": {"embedded_dir": str(locked / "pg")}},
        environ={},
    )
    assert start_hot_store(cfg) == (None, None)
    assert "no hot tables this time" in caplog.text and str(locked) in caplog.text
