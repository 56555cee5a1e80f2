"""Coverage lists every expected hour of an active feed: an OKX day recorded at hours H and
H+4, with only a connection record of OKX at H+1, only one of another exchange at H+2 and no
segment at all at H+3, gives zero-row hours with reasons venue_silent, no_data, daemon_down."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from fluxforge import quality
from fluxforge.captures import merge_captures
from fluxforge.config import config_from_dict
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, LocalStorage

HOUR_NS = 3_600 * 10**9


def _shift(payload: bytes, hours: int) -> bytes:
    msg = orjson.loads(payload)
    for row in msg.get("data", []) if isinstance(msg.get("data"), list) else []:
        if isinstance(row, dict) and "ts" in row:
            row["ts"] = str(int(row["ts"]) + hours * 3_600_000)
    return orjson.dumps(msg)


def _connect(ts: int, ex: str, seq: int) -> bytes:
    return encode_envelope(ts, "okx", ex, seq, "ctl", b'{"event":"connect","url":"wss://x"}')


def test_coverage_missing_hours_listed_with_their_reason(captures: Path, tmp_path: Path) -> None:
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    storage = LocalStorage(tmp_path)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    t0 = recs[0].ts
    seq = 0

    def write(hours: int, counter: int, lines: list[bytes]) -> None:
        hour = datetime.fromtimestamp((t0 + hours * HOUR_NS) // 10**9, tz=UTC)
        storage.write_bytes(
            layout.segment("ready", "okx", segment_name(hour, counter)), b"".join(lines)
        )

    def data(hours: int) -> list[bytes]:
        nonlocal seq
        out = []
        for r in recs:
            seq += 1
            out.append(
                encode_envelope(
                    r.ts + hours * HOUR_NS, "okx", "okx", seq, "msg", _shift(r.payload, hours)
                )
            )
        return out

    write(0, 1, data(0))
    write(1, 2, [_connect(t0 + HOUR_NS, "okx", 10**6)])  # connected, nothing arrived
    write(2, 3, [_connect(t0 + 2 * HOUR_NS, "coinbase", 10**6 + 1)])  # another venue only
    # hour 3: no segment (the daemon was down)
    write(4, 4, [_connect(t0 + 4 * HOUR_NS - 1, "okx", 10**6 + 2), *data(4)])
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(tmp_path)}}, environ={})
    assert not process_ready(cfg).failed
    date = datetime.fromtimestamp(t0 // 10**9, tz=UTC).date().isoformat()
    cov = quality.partition_coverage_with_missing(cfg, "okx", date).to_pylist()
    base = t0 // HOUR_NS
    channels = {r["channel"] for r in cov}
    assert channels == {"book", "trades", "quotes"}
    for channel in channels:
        rows = {
            int(r["hour"].timestamp()) // 3600 - base: r
            for r in cov
            if r["channel"] == channel and r["symbol"] == "BTC-USDT"
        }
        assert sorted(rows) == [0, 1, 2, 3, 4], channel
        assert [rows[h]["reason"] for h in range(5)] == [
            None, "venue_silent", "no_data", "daemon_down", None
        ], channel  # fmt: skip
        assert rows[0]["rows"] > 0 and rows[4]["rows"] == rows[0]["rows"]
        assert all(rows[h]["rows"] == 0 and rows[h]["first_ts_recv"] is None for h in (1, 2, 3))
    # without the missing hours, coverage is what the refinery summarized
    plain = quality.partition_coverage(cfg, "okx", date).to_pylist()
    assert plain == [r for r in cov if r["reason"] is None]


@pytest.mark.parametrize("recorded", [set(), {5}])
def test_coverage_missing_hours_of_an_empty_coverage_is_empty(recorded: set[int]) -> None:
    empty = quality.COVERAGE_SCHEMA.empty_table()
    assert quality.missing_hours(empty, recorded, set()).num_rows == 0
