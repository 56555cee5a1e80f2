"""The refinery assets with the lake on a real S3-compatible server (SeaweedFS): the config
picks the S3 storage and the S3 Parquet IO manager; parts and coverage land in the bucket."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_helpers import SMALL_CAPTURES, link_captures, replay, write_config

from fluxforge import refinery
from fluxforge.config import load_config
from fluxforge_dagster.defs.assets import build_assets
from fluxforge_dagster.defs.resources import LakeDeltaIOManager, build_resources

pytestmark = [pytest.mark.services]


def test_materialize_lake_on_s3_parts_and_coverage_in_bucket(
    tmp_path: Path, captures: Path, clean_env: None, s3_env
):
    bucket = s3_env.bucket("lake")
    output = {
        "backend": "s3",
        "base_dir": bucket,
        "s3": {"endpoint_url": s3_env.endpoint_url, "region": s3_env.region},
    }
    path = write_config(
        tmp_path,
        link_captures(tmp_path, captures, SMALL_CAPTURES),
        storage={"etl_storage_output": output},
    )
    cfg = load_config(path, environ={})
    assert replay(cfg) == 0
    # per-source order: earlier days of the source must not wait in ready/ (they would hold it)
    for ref in refinery.list_segments(cfg, "ready"):
        if ref.date < "2022-04-07":
            (tmp_path / "data" / "raw" / "ready" / ref.source / ref.name).unlink()
    refs = [r for r in refinery.list_segments(cfg, "ready") if r.date == "2022-04-07"][:2]
    assert all(refinery.claim(cfg, r) for r in refs)
    resources = build_resources(cfg)
    assert isinstance(resources["lake_io_manager"], LakeDeltaIOManager)
    result = dg.materialize(
        build_assets(cfg),
        resources=resources,
        partition_key="2022-04-07|replay",
        run_config={"ops": {"refinery": {"config": {"segments": [r.name for r in refs]}}}},
    )
    assert result.success
    client = s3_env.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    parts = [k for k in keys if k.startswith("processed/book_deltas/") and "/part-" in k]
    assert parts
    assert any(k.startswith("processed/book_deltas/_delta_log/") for k in keys)
    from deltalake import DeltaTable

    from fluxforge.lake import Lake

    lake = Lake.of(cfg)
    coverage = DeltaTable(lake.storage.uri("processed/coverage"), storage_options=lake.options)
    coverage = coverage.to_pyarrow_table(
        partitions=[("date", "=", "2022-04-07"), ("source", "=", "replay")]
    )
    assert coverage.num_rows > 0
    assert all(e.passed for e in result.get_asset_check_evaluations() if "schema" in e.check_name)
