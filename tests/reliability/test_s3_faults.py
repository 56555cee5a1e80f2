"""S3 errors and throttling injected between boto3 and a real S3 server (SeaweedFS).

A fault proxy (faultproxy.py) turns >= 10 % of the requests into 500 InternalError, 503
SlowDown, connection resets or answers held past the client's read timeout (after the server
executed the request). Ingestion uploads, processing (ETL input and output on S3) and the lake
writes must complete with exactly the objects of a fault-free run: nothing lost, nothing
written twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fluxforge import lake, refinery
from fluxforge.config import Config
from fluxforge.segments import iter_lines, parse_envelope
from fluxforge.tables import REFINERY_TABLES
from ingestion_daemon.service import Daemon, select_sources
from tests.reliability.conftest import load, record_figures
from tests.reliability.faultproxy import FaultProxy

pytestmark = [pytest.mark.services, pytest.mark.slow]

FAULT_RATE = 0.15
# small timeouts so a held answer times out fast; enough attempts that 15 % faults never
# exhaust botocore's retries
S3_CLIENT = {"read_timeout_s": 0.5, "connect_timeout_s": 1.0, "max_attempts": 10}


def _layer(bucket: str, endpoint: str, region: str) -> dict[str, Any]:
    return {
        "backend": "s3",
        "base_dir": bucket,
        "s3": {"endpoint_url": endpoint, "region": region, **S3_CLIENT},
    }


def _objects(client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def _ingest(cfg: Config) -> int:
    return asyncio.run(Daemon(cfg, select_sources(cfg, None), None).run())


def _ingest_cfg(tmp: Path, bucket: str, endpoint: str, region: str, inputs: list[Path]) -> Config:
    return load(
        {
            "storage": {
                "ingestion_storage": _layer(bucket, endpoint, region),
                "spill_dir": str(tmp / "spill"),
            },
            "sources": [
                {"name": "rep", "type": "replay", "path": str(inputs[0].parent / "segment_*")}
            ],
            "ingestion": {"segment_max_bytes": 100_000},
        }
    )


@pytest.fixture(scope="module")
def ingested(s3_server, synthetic_input, tmp_path_factory) -> dict[str, Any]:
    """The same replay ingested into S3 twice: directly (clean) and through the fault proxy."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    try:
        tmp = tmp_path_factory.mktemp("s3-ingest")
        clean, faulty = s3_server.bucket("ingest-clean"), s3_server.bucket("ingest-faulty")
        reg = s3_server.region
        assert (
            _ingest(_ingest_cfg(tmp / "c", clean, s3_server.endpoint_url, reg, synthetic_input))
            == 0
        )
        with FaultProxy(s3_server.endpoint_url, rate=FAULT_RATE, seed=11, hold_s=0.8) as proxy:
            t0 = time.monotonic()
            rc = _ingest(_ingest_cfg(tmp / "f", faulty, proxy.url, reg, synthetic_input))
            seconds = time.monotonic() - t0
        return {
            "rc": rc,
            "clean": clean,
            "faulty": faulty,
            "stats": proxy.stats,
            "spill": tmp / "f" / "spill",
            "seconds": seconds,
        }
    finally:
        mp.undo()


def test_s3_faults_daemon_upload_every_segment_once_identical_to_clean_run(
    ingested, s3_server, synthetic_input
) -> None:
    client = s3_server.client()
    stats = ingested["stats"]
    assert ingested["rc"] == 0
    clean = _objects(client, ingested["clean"])
    faulty = _objects(client, ingested["faulty"])
    assert not list(ingested["spill"].rglob("segment_*"))  # no upload gave up to local disk
    segments = sorted(k for k in faulty if k.startswith("raw/ready/rep/"))
    assert len(segments) >= 8
    assert faulty == clean  # same keys, same bytes: nothing lost, nothing duplicated
    envs = [parse_envelope(line) for k in segments for _, line in iter_lines(faulty[k])]
    assert [e.seq for e in envs] == list(range(len(envs)))
    expected = sum(1 for p in synthetic_input for _ in iter_lines(p.read_bytes()))
    replayed = [e for e in envs if not (e.kind == "ctl" and e.data.get("event") == "seal")]
    # the input's own seal records are not replayed (they described the original files)
    assert len(replayed) == expected - len(synthetic_input)
    assert stats.total_faults / stats.requests >= 0.10
    assert stats.total_faults >= 5
    assert stats.retries >= stats.total_faults  # every fault was retried by botocore
    record_figures(
        "s3_faults_ingestion",
        {
            **stats.summary(),
            "segments_uploaded": len(segments),
            "lines": len(envs),
            "seconds": round(ingested["seconds"], 1),
        },
    )


def _process_cfg(bucket: str, endpoint: str, region: str) -> Config:
    layer = _layer(bucket, endpoint, region)
    return load({"storage": {"etl_storage_input": layer, "etl_storage_output": layer}})


def _upload_ready(client, bucket: str, inputs: list[Path]) -> None:
    for path in inputs:
        client.put_object(Bucket=bucket, Key=f"raw/ready/syn/{path.name}", Body=path.read_bytes())


def test_s3_faults_processing_and_lake_writes_identical_to_clean_run(
    s3_server, s3_env, synthetic_input
) -> None:
    """ETL input and output both on S3 through the proxy (claim copy+delete, segment reads,
    book checkpoints, manifests, Parquet parts, archive moves)."""
    client = s3_server.client()
    buckets = {"clean": s3_server.bucket("etl-clean"), "faulty": s3_server.bucket("etl-faulty")}
    for bucket in buckets.values():
        _upload_ready(client, bucket, synthetic_input)
    reg = s3_server.region
    clean_report = refinery.process_ready(
        _process_cfg(buckets["clean"], s3_server.endpoint_url, reg)
    )
    assert clean_report.failed == []

    # every request is exposed, delta-rs's own (log reads, commit PUTs) included; the proxy
    # runs in its own process (delta-rs holds the GIL in some calls)
    with FaultProxy(
        s3_server.endpoint_url, rate=FAULT_RATE, seed=23, hold_s=0.8, process=True
    ) as proxy:
        cfg = _process_cfg(buckets["faulty"], proxy.url, reg)
        t0 = time.monotonic()
        report = refinery.process_ready(cfg)
        # a segment whose S3 calls keep failing beyond every retry goes back to ready/; the next
        # run (the sensor's retry) picks it up, and skips what a commit already published
        rounds = 1
        while refinery.list_segments(cfg, "ready") and rounds < 6:
            report.merge(refinery.process_ready(cfg))
            rounds += 1
        seconds = time.monotonic() - t0
    stats = proxy.stats
    assert sorted(set(report.segments)) == sorted(clean_report.segments)
    clean = _objects(client, buckets["clean"])
    faulty = _objects(client, buckets["faulty"])

    def committed(bucket: str) -> dict[str, bytes]:
        """The committed data files of every table (from the Delta logs), plus the state."""
        store = refinery._Ctx(_process_cfg(bucket, s3_server.endpoint_url, reg)).out
        objs = clean if bucket == buckets["clean"] else faulty
        keys = [k for t in REFINERY_TABLES for k in lake.list_parts(store, t)]
        state = [k for k in objs if k.startswith(("state/books/", "state/segments/"))]
        return {k: objs[k] for k in [*keys, *state]}

    lake_keys = sorted(k for k in faulty if k.startswith("processed/"))
    assert any("/trades/" in k for k in lake_keys) and any("/_delta_log/" in k for k in lake_keys)
    # the same committed files (names carry a content hash), rows and state as the clean run
    assert committed(buckets["faulty"]) == committed(buckets["clean"])
    assert not [k for k in faulty if k.startswith(("raw/ready/", "raw/processing/"))]
    archived = [k for k in faulty if k.startswith("raw/archive/")]
    assert len(archived) == len(clean_report.segments)
    assert stats.total_faults / stats.requests >= 0.10
    assert stats.faults_by_area["processed"] >= 1  # lake writes were hit too
    commit_faults = [f for f in stats.faulted if f[0] == "PUT" and "/_delta_log/" in f[1]]
    assert commit_faults  # and Delta commits themselves
    # every boto3 fault was retried by botocore (delta-rs's client announces no attempts)
    assert stats.retries >= stats.faults_by_client["boto3"]
    record_figures(
        "s3_faults_processing",
        {
            **stats.summary(),
            "segments": len(clean_report.segments),
            "runs": rounds,
            "commit_faults": len(commit_faults),
            "lake_objects": len(lake_keys),
            "seconds": round(seconds, 1),
            "rows": report.rows,
        },
    )


def test_s3_faults_claim_marker_answer_lost_still_moves_exactly_once(s3_server, s3_env) -> None:
    """The claim marker's conditional PUT is executed but its answer is lost: botocore's retry
    gets 412 from our own marker. The move must still happen (not look 'claimed by someone
    else', which left the segment in ready/ for the whole lease while later ones ran)."""
    from fluxforge.config import S3Settings
    from fluxforge.storage.s3 import CLAIMS_DIR, S3Storage

    bucket = s3_server.bucket("claim-lost")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="raw/ready/s/seg.ndjson", Body=b"payload\n")
    held: list[str] = []

    def hold_first_claim(method: str, target: str) -> str | None:
        if method == "PUT" and CLAIMS_DIR in target and not held:
            held.append(target)
            return "timeout"
        return None

    with FaultProxy(s3_server.endpoint_url, rule=hold_first_claim, hold_s=0.8) as proxy:
        settings = S3Settings(endpoint_url=proxy.url, region=s3_server.region, **S3_CLIENT)
        storage = S3Storage(bucket, settings)
        moved = storage.move("raw/ready/s/seg.ndjson", "raw/processing/s/seg.ndjson")
    assert held  # the fault was injected
    assert moved is True
    keys = set(_objects(client, bucket))
    assert keys == {"raw/processing/s/seg.ndjson"}  # moved once, no marker left behind
