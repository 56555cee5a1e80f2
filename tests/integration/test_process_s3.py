"""`process` with both ETL layers on a real S3-compatible server (SeaweedFS): claim by copy +
delete, parts and checkpoints written as whole objects, archive kept, reprocessing replaces
objects byte for byte. Input: the Kraken captures replayed by the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fluxforge import lake
from fluxforge.config import config_from_dict
from fluxforge.refinery import list_segments, process_ready, rebuild
from fluxforge.storage import open_storage

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _replay_kraken(root: Path, captures: Path) -> list[Path]:
    cfg = {
        "storage": {"backend": "local", "base_dir": str(root / "data")},
        "sources": [
            {"name": "kraken", "type": "replay", "path": str(captures / "KRAKEN" / "*"), "speed": 0}
        ],
    }
    (root / "replay.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", "ingest", "--config", "replay.yaml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return sorted((root / "data" / "raw" / "ready" / "kraken").glob("segment_*.ndjson"))


def test_process_s3_layers_verify_checksums_and_reprocess_identically(
    tmp_path: Path, captures: Path, s3_env
) -> None:
    segments = _replay_kraken(tmp_path, captures)
    assert segments
    bucket = s3_env.bucket("lake")
    layer = {
        "backend": "s3",
        "base_dir": bucket,
        "s3": {"endpoint_url": s3_env.endpoint_url, "region": s3_env.region},
    }
    cfg = config_from_dict(
        {
            "storage": {"etl_storage_input": layer, "etl_storage_output": layer},
            "tiering": {"warm_dir": str(tmp_path / "warm")},
        },
        environ={},
    )
    store = open_storage(cfg.storage.etl_output)
    for seg in segments:
        store.write_bytes(f"raw/ready/kraken/{seg.name}", seg.read_bytes())

    report = process_ready(cfg).to_dict()
    assert report["failed"] == [] and report["segments_processed"] == len(segments)
    assert sum(b["checksums_verified"] for b in report["books"]) == 2595
    assert sum(b["checksum_mismatches"] for b in report["books"]) == 0
    assert report["lines"] == report["data"] + report["control"] + report["quarantined"]
    assert list_segments(cfg, "ready") == []
    assert len(list_segments(cfg, "archive")) == len(segments)

    files = {key: store.read_bytes(key) for key in report["files"]}
    trades = lake.read_table(store, "trades", exchange="kraken")
    assert trades.num_rows == report["trades"] > 0
    assert set(trades.column("date").to_pylist()) == {"2021-04-17"}

    # the same segments again (a copy back into ready/): already published, nothing added
    for ref in list_segments(cfg, "archive"):
        assert store.move(f"raw/archive/kraken/{ref.name}", f"raw/ready/kraken/{ref.name}")
    again = process_ready(cfg).to_dict()
    assert again["failed"] == [] and sorted(again["files"]) == sorted(files)
    assert lake.read_table(store, "trades", exchange="kraken").equals(trades)
    # a deliberate rebuild replaces the day's rows with the same files (content-named)
    rebuild(cfg, "kraken", "2021-04-17")
    assert lake.read_table(store, "trades", exchange="kraken").equals(trades)
    assert {key: store.read_bytes(key) for key in lake.list_parts(store, "trades")} == {
        k: v for k, v in files.items() if "/trades/" in k
    }
