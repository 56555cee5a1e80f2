"""A lake built from the OKX capture, shared by the command-line answer and plot tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from fluxforge.captures import merge_captures
from fluxforge.config import config_from_dict
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage


@pytest.fixture(scope="session")
def lake(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("answers")
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    lines = [
        encode_envelope(r.ts, "okx", "okx", i, "msg", frame_payload(r.payload))
        for i, r in enumerate(recs, 1)
    ]
    data = {
        "storage": {"backend": "local", "base_dir": str(base)},
        "hot_store": {"embedded": False},
    }
    cfg = config_from_dict(data, environ={})
    hour = datetime.fromtimestamp(recs[0].ts // 10**9, tz=UTC)
    LocalStorage(base).write_bytes(
        Layout.of(cfg.storage.ingestion).segment("ready", "okx", segment_name(hour, 1)),
        b"".join(lines),
    )
    assert not process_ready(cfg).failed
    path = base / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
