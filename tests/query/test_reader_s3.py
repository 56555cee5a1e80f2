"""The reader answers the same on an S3 lake (real SeaweedFS) as on a local one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fluxforge.captures import merge_captures
from fluxforge.config import Config, config_from_dict
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage

pytestmark = pytest.mark.services


def _okx_segment(base: Path, captures: Path) -> list[int]:
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    lines = [
        encode_envelope(r.ts, "okx", "okx", i, "msg", frame_payload(r.payload))
        for i, r in enumerate(recs, 1)
    ]
    hour = datetime.fromtimestamp(recs[0].ts // 10**9, tz=UTC)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    LocalStorage(base).write_bytes(
        layout.segment("ready", "okx", segment_name(hour, 1)), b"".join(lines)
    )
    return [r.ts for r in recs]


def _cfg(raw: Path, output: dict) -> Config:
    return config_from_dict(
        {
            "storage": {
                "backend": "local",
                "base_dir": str(raw),
                "etl_storage_output": output,
            }
        },
        environ={},
    )


def test_reader_on_s3_lake_equals_local_lake(captures: Path, tmp_path: Path, s3_env) -> None:
    bucket = s3_env.bucket("lake")
    s3 = {"backend": "s3", "base_dir": bucket, "s3": {"endpoint_url": s3_env.endpoint_url}}
    local_cfg = _cfg(tmp_path / "a", {"backend": "local", "base_dir": str(tmp_path / "lake")})
    s3_cfg = _cfg(tmp_path / "b", s3)
    times = _okx_segment(tmp_path / "a", captures)
    _okx_segment(tmp_path / "b", captures)
    assert not process_ready(local_cfg).failed
    assert not process_ready(s3_cfg).failed
    local, remote = Reader(local_cfg), Reader(s3_cfg)
    start, end = times[0], times[-1]
    trades = remote.trades("okx", "BTC-USDT", start, end)
    assert trades.num_rows > 0
    assert trades.equals(local.trades("okx", "BTC-USDT", start, end))
    for t in times[:: max(1, len(times) // 15)]:
        a = local.book_at("okx", "BTC-USDT", t, depth=25)
        b = remote.book_at("okx", "BTC-USDT", t, depth=25)
        assert (a.bids, a.asks) == (b.bids, b.asks)
    assert len(b.bids) == 25
