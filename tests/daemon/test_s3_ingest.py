"""S3 as ingestion storage, against a real SeaweedFS server: segments are buffered in memory and
uploaded straight to ready/ (multipart above 5 MB); seq, counters and the replay cursor survive a
restart through the state object in the bucket."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fluxforge.config import config_from_dict
from fluxforge.segments import is_own_ctl, iter_lines, parse_envelope, parse_segment_name
from ingestion_daemon.service import run_daemon

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _capture(path: Path, frames: int, pad: int) -> None:
    t0 = 1_700_000_000.0
    with path.open("w") as fh:
        fh.write(f"wss://x <-> {t0:.6f}\n")
        for i in range(frames):
            frame = {"type": "l2update", "i": i, "pad": "p" * pad}
            fh.write(f"{t0 + 0.001 + i * 0.01:.6f}: {orjson.dumps(frame).decode()}\n")


def test_s3_ingestion_uploads_sealed_segments_to_ready_and_resumes(s3_env, tmp_path: Path):
    bucket = s3_env.bucket("ingest")
    frames = 30_000  # ~7.5 MB in one UTC hour: the big segment goes up as a multipart upload
    capture = tmp_path / "COINBASE.ws.1.0"
    _capture(capture, frames, pad=200)
    small = tmp_path / "KRAKEN.ws.1.0"
    _capture(small, 2_000, pad=10)
    data = {
        "storage": {
            "ingestion_storage": {
                "backend": "s3",
                "base_dir": bucket,
                "s3": {"endpoint_url": s3_env.endpoint_url, "region": s3_env.region},
            },
            "spill_dir": str(tmp_path / "spill"),
        },
        "sources": [
            {"name": "big", "type": "replay", "path": str(capture)},
            {"name": "small", "type": "replay", "path": str(small)},
        ],
        "ingestion": {"segment_max_bytes": 64 << 20},
    }
    cfg = config_from_dict(data, environ={})
    small_cfg = config_from_dict({**data, "ingestion": {"segment_max_bytes": 16384}}, environ={})
    assert run_daemon(cfg, ["big"]) == 0
    assert run_daemon(small_cfg, ["small"]) == 0
    client = s3_env.client()

    def ready(source: str) -> list[str]:
        resp = client.list_objects_v2(Bucket=bucket, Prefix=f"raw/ready/{source}/")
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def lines(keys: list[str]) -> list:
        out = []
        for key in keys:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            out += [parse_envelope(line) for _, line in iter_lines(body)]
        return out

    big_keys = ready("big")
    assert len(big_keys) == 1
    assert client.head_object(Bucket=bucket, Key=big_keys[0])["ContentLength"] > 5 << 20
    envs = lines(big_keys)
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert [e.data["i"] for e in envs if e.kind == "msg"] == list(range(frames))

    small_keys = ready("small")
    assert len(small_keys) > 5
    envs = lines(small_keys)
    assert [e.seq for e in envs] == list(range(len(envs)))
    assert [e.data["i"] for e in envs if e.kind == "msg"] == list(range(2000))
    assert all(e.data["event"] == "seal" for e in envs if is_own_ctl(e))
    assert not list(tmp_path.glob("spill/**/segment_*"))  # nothing fell back to local disk
    state = orjson.loads(
        client.get_object(Bucket=bucket, Key="state/daemon/small.json")["Body"].read()
    )
    assert state["next_seq"] == len(envs)

    # a restart resumes: the replay input is already written, seq and counters go on
    more = tmp_path / "more" / "KRAKEN.ws.2.0"
    more.parent.mkdir()
    _capture(more, 100, pad=10)
    assert run_daemon(small_cfg, ["small"]) == 0
    assert ready("small") == small_keys
    again = config_from_dict(
        {**data, "sources": [{"name": "small", "type": "replay", "path": str(more)}]},
        environ={},
    )
    assert run_daemon(again, ["small"]) == 0
    new_keys = [k for k in ready("small") if k not in small_keys]
    assert len(new_keys) == 1
    last = max(parse_segment_name(k).counter for k in small_keys)
    assert parse_segment_name(new_keys[0]).counter > last
    assert lines(new_keys)[0].seq == len(envs)
