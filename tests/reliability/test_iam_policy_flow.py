"""Issue case 10: the shipped IAM policy (infra/iam/) covers every prefix FluxForge uses.

Before, it omitted ``.fluxforge-claims/``, so on AWS no segment could ever be claimed, and
nothing tested it. Here moto's server judges IAM: the whole S3 flow (the daemon's S3 upload,
the refinery's claims, processing, the lake and state writes, archiving) runs as a user holding
exactly the shipped policy, and any denied call fails the test.

moto authorizes an S3 request by its API operation name (``s3:CopyObject``, ``s3:HeadObject``,
``s3:ListObjectsV2``...) and evaluates no ``s3:prefix`` condition. The policy given to moto is
the shipped one with each IAM action expanded into the operations AWS authorizes with it
(``OPERATIONS``, from the S3 API reference) and the listing condition dropped (its prefixes are
checked by tests/integration/test_infra_files.py); resources, the part that was wrong, are the
shipped ones unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxforge.config import SourceConfig, config_from_dict
from fluxforge.refinery import list_segments, process_ready
from ingestion_daemon.sources.synthetic import SyntheticSource
from ingestion_daemon.writer import SegmentWriter
from tests._services import free_port
from tests.reliability.conftest import REPO, StepClock, record_figures

pytestmark = pytest.mark.services

POLICY = REPO / "infra" / "iam" / "fluxforge-bucket-policy.json"
BUCKET = "fluxforge-lake"
# IAM action -> the S3 API operations AWS authorizes with it
OPERATIONS = {
    "s3:GetObject": ["GetObject", "HeadObject", "CopyObject", "SelectObjectContent"],
    "s3:PutObject": [
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
    ],
    "s3:DeleteObject": ["DeleteObject", "DeleteObjects"],
    "s3:ListBucket": ["ListObjects", "ListObjectsV2", "HeadBucket"],
    "s3:AbortMultipartUpload": ["AbortMultipartUpload"],
    "s3:ListMultipartUploadParts": ["ListParts"],
}
# requests moto lets through unauthenticated: the bucket, the user, its policy, its key
SETUP_CALLS = 4


def _moto_policy() -> str:
    doc = json.loads(POLICY.read_text())
    for stmt in doc["Statement"]:
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        stmt["Action"] = sorted({f"s3:{op}" for a in actions for op in OPERATIONS[a]})
        stmt.pop("Condition", None)
    return json.dumps(doc)


@pytest.fixture
def moto_judge(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto_server not installed (uv sync: moto[server] is a dev dependency)")
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_CALLS))
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
        import boto3
        from botocore.config import Config

        admin = {
            "endpoint_url": url,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **admin).create_bucket(
            Bucket=BUCKET
        )
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="fluxforge")
        iam.put_user_policy(
            UserName="fluxforge", PolicyName="bucket", PolicyDocument=_moto_policy()
        )
        key = iam.create_access_key(UserName="fluxforge")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_iam_policy_whole_s3_flow_as_restricted_principal(
    moto_judge: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setenv("FLUXFORGE_LOCK_DIR", str(tmp_path / "locks"))
    layer = {
        "backend": "s3",
        "base_dir": BUCKET,
        "s3": {"endpoint_url": moto_judge, "region": "us-east-1", "max_attempts": 2},
    }
    cfg = config_from_dict(
        {
            "storage": {
                "ingestion_storage": layer,
                "etl_storage_input": layer,
                "etl_storage_output": layer,
            },
            "ingestion": {"segment_max_bytes": 200_000, "flush_max_lines": 2000},
            "tiering": {"warm_dir": str(tmp_path / "warm")},
        },
        environ={},
    )
    writer = SegmentWriter(cfg, "syn", default_ex="coinbase", live=False, clock=StepClock())
    writer.open()
    src = SourceConfig(name="syn", type="synthetic", rate=1e9, seed=11, max_messages=3000)
    asyncio.run(SyntheticSource(src, cfg).run(writer, asyncio.Event()))
    writer.close()
    sealed = list(writer.sealed)
    assert len(sealed) >= 2
    assert [r.name for r in list_segments(cfg, "ready")] == sealed

    report = process_ready(cfg)
    denied = [r.getMessage() for r in caplog.records if "AccessDenied" in r.getMessage()]
    assert denied == [] and report.failed == [] and not report.held, (denied, report.failed)
    assert sorted(report.segments) == sorted(f"syn/{n}" for n in sealed)
    assert [r.name for r in list_segments(cfg, "archive")] == sealed
    assert report.rows["trades"] > 0
    record_figures(
        "iam_policy_flow",
        {"segments": len(sealed), "trades": report.rows["trades"], "denied_calls": 0},
    )
