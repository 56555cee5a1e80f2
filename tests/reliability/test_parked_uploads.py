"""Issue case 6 (uploads): a daemon upload to S3 that failed five times parked the segment on
local disk and never tried again. Now parked segments are offered to S3 again (start-up, then
periodically) until they are there, nothing overtakes them, and ``fluxforge status`` lists
them meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fluxforge.config import SourceConfig, config_from_dict
from fluxforge.status import collect
from ingestion_daemon import writer as writer_mod
from ingestion_daemon.sources.synthetic import SyntheticSource
from ingestion_daemon.writer import SegmentWriter
from tests.reliability.conftest import StepClock, record_figures
from tests.reliability.faultproxy import FaultProxy

pytestmark = pytest.mark.services


def test_parked_uploads_retried_until_in_s3_in_order(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "UPLOAD_ATTEMPTS", 2)
    monkeypatch.setattr(writer_mod, "UPLOAD_BACKOFF_S", 0.05)
    monkeypatch.setattr(writer_mod, "PARKED_RETRY_S", 0.0)
    bucket = s3_env.bucket("parked")
    down = [True]

    def rule(method: str, target: str) -> str | None:
        return "500" if down[0] and method == "PUT" and "/raw/ready/" in target else None

    with FaultProxy(s3_env.endpoint_url, rule=rule) as proxy:
        layer = {
            "backend": "s3",
            "base_dir": bucket,
            "s3": {"endpoint_url": proxy.url, "region": s3_env.region, "max_attempts": 1},
        }
        cfg = config_from_dict(
            {
                "storage": {
                    "ingestion_storage": layer,
                    "etl_storage_input": layer,
                    "etl_storage_output": layer,
                    "spill_dir": str(tmp_path / "spill"),
                },
                "ingestion": {"segment_max_bytes": 100_000, "flush_max_lines": 1000},
                "tiering": {"warm_dir": str(tmp_path / "warm")},
            },
            environ={},
        )
        writer = SegmentWriter(cfg, "syn", default_ex="coinbase", live=False, clock=StepClock())
        writer.open()
        src = SourceConfig(name="syn", type="synthetic", rate=1e9, seed=2, max_messages=2000)
        asyncio.run(SyntheticSource(src, cfg).run(writer, asyncio.Event()))
        writer.seal("end")
        sealed = list(writer.sealed)
        assert len(sealed) >= 3
        parked_dir = tmp_path / "spill" / "raw" / "ready" / "syn"
        deadline = time.monotonic() + 60
        while len(list(parked_dir.glob("segment_*"))) < len(sealed):
            assert time.monotonic() < deadline, "segments were not parked"
            time.sleep(0.05)
        parked = collect(cfg)["parked_uploads"]
        assert sorted(p.rsplit("/", 1)[-1] for p in parked) == sorted(sealed)
        s3 = s3_env.client()
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="raw/ready/")
        assert listed.get("KeyCount", 0) == 0  # nothing overtook the first parked one

        down[0] = False  # S3 is back: the periodic retry uploads them
        deadline = time.monotonic() + 60
        while list(parked_dir.glob("segment_*")):
            assert time.monotonic() < deadline, "parked segments never reached S3"
            writer.tick()
            time.sleep(0.1)
        writer.close()
        after = collect(cfg)["parked_uploads"]
    keys = [
        o["Key"].rsplit("/", 1)[-1]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix="raw/ready/syn/")["Contents"]
    ]
    assert sorted(keys) == sorted(sealed)
    assert after == []
    record_figures(
        "parked_uploads",
        {"segments": len(sealed), "parked": len(sealed), "uploaded_after_recovery": len(keys)},
    )
