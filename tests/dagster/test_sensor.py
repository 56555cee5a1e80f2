"""ready_segments_sensor on real replayed segments: run requests, claims, cursor, skips."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster_helpers import ready_names

from fluxforge_dagster.definitions import defs as load_defs
from fluxforge_dagster.defs.resources import FluxForgeResource
from fluxforge_dagster.defs.sensors import build_sensor


@pytest.fixture
def tick(small_replay, monkeypatch: pytest.MonkeyPatch):
    path, cfg = small_replay
    monkeypatch.setenv("FLUXFORGE_CONFIG", str(path))
    definitions = load_defs()
    sensor = build_sensor(cfg)
    instance = dg.DagsterInstance.ephemeral()

    def run(cursor: str | None):
        ctx = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=definitions,
            resources={"fluxforge": FluxForgeResource(config_path=str(path))},
        )
        return sensor.evaluate_tick(ctx)

    run.instance = instance  # type: ignore[attr-defined]
    return run


def test_sensor_ready_backlog_batched_claimed_cursor_advanced(tick, tmp_path: Path):
    ready = ready_names(tmp_path)
    result = tick(None)
    requests = result.run_requests
    # 3 per run (config), one partition (date, source) per run, in segment order
    batched = [n for r in requests for n in r.run_config["ops"]["refinery"]["config"]["segments"]]
    assert batched == ready
    assert all(len(r.run_config["ops"]["refinery"]["config"]["segments"]) <= 3 for r in requests)
    first = requests[0]
    names = first.run_config["ops"]["refinery"]["config"]["segments"]
    assert first.run_key == f"replay:{names[0][:-7]}..{names[-1][:-7]}"
    assert first.partition_key == f"{names[0][8:12]}-{names[0][12:14]}-{names[0][14:16]}|replay"
    assert first.tags["fluxforge/source"] == "replay"
    assert json.loads(result.cursor)["last"] == {"replay": ready[-1]}
    # claimed: ready -> processing, each exactly once
    assert ready_names(tmp_path) == []
    assert ready_names(tmp_path, state="processing") == ready


def test_sensor_nothing_ready_skips_with_reason_and_keeps_cursor(tick):
    first = tick(None)
    second = tick(first.cursor)
    assert second.run_requests == []
    assert "no ready segments" in second.skip_message
    assert second.cursor == first.cursor


def test_sensor_uncommitted_tick_orphans_rerequested_same_run_keys(tick):
    first = tick(None)
    # the daemon lost that tick (cursor not stored): the claimed segments come back with the
    # same run keys, which Dagster dedupes if the runs were launched after all
    again = tick(None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]


def test_sensor_segment_put_back_to_ready_retried_under_new_run_key(tick, tmp_path: Path):
    first = tick(None)
    name = ready_names(tmp_path, state="processing")[0]
    data = tmp_path / "data" / "raw"
    (data / "processing" / "replay" / name).rename(data / "ready" / "replay" / name)
    retry = tick(first.cursor)
    assert len(retry.run_requests) == 1
    assert retry.run_requests[0].run_key == f"replay:{name[:-7]}..{name[:-7]}#retry1"
    assert json.loads(retry.cursor)["retries"] == {"replay": 1}


def test_sensor_segments_held_by_failed_run_retried_then_reported(tick):
    first = tick(None)
    req = first.run_requests[0]
    names = req.run_config["ops"]["refinery"]["config"]["segments"]
    # the run's worker died (Ctrl-C, kill): it failed without handing its segments back
    failed = dg.DagsterRun(
        job_name="refinery_job", run_id="f" * 32, status=dg.DagsterRunStatus.FAILURE, tags=req.tags
    )
    tick.instance.add_run(failed)
    retry = tick(first.cursor)
    assert [r.run_config["ops"]["refinery"]["config"]["segments"] for r in retry.run_requests] == [
        names
    ]
    assert retry.run_requests[0].run_key.endswith("#retry1")
    cursor = json.loads(retry.cursor)
    assert cursor["held"] == {f"replay/{n}": 1 for n in names}
    # after MAX_HELD_RETRIES failed attempts the segments are only reported
    cursor["held"] = {k: 3 for k in cursor["held"]}
    given_up = tick(json.dumps(cursor))
    assert given_up.run_requests == []
    assert "after 3 failed runs" in given_up.skip_message and names[0] in given_up.skip_message
