"""Replay of every capture file: frame counts match the captures (and data/README.md), payloads
are embedded verbatim, a multi-file recording is merged in receive-time order."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fluxforge.captures import exchange_from_filename, read_capture
from fluxforge.segments import is_own_ctl, iter_lines, parse_envelope, raw_payload
from ingestion_daemon.service import run_daemon

from .conftest import make_config, ready_files

# received frames / REST responses per file, from data/README.md's record counts
README_RECV = {
    "COINBASE.ws.28.0": 9946,
    "BINANCE_FUTURES.ws.1.0": 1535,
    "BITGET.ws.2.0": 473,
    "KRAKEN.ws.50.0": 2637,
    "OKX.ws.1.0": 198,
}
README_REST = {"BINANCE_FUTURES.http.0.0": 4, "OKX.0": 25, "COINBASE.0": 1}


def _lines(root: Path, source: str) -> list[bytes]:
    return [line for f in ready_files(root, source) for _, line in iter_lines(f.read_bytes())]


def test_replay_every_capture_file_writes_every_frame_verbatim(captures: Path, tmp_path: Path):
    files = sorted(p for p in captures.glob("*/*") if p.is_file())
    assert len(files) >= 13
    sources = [{"name": p.name, "type": "replay", "path": str(p), "speed": 0} for p in files]
    cfg = make_config(tmp_path, sources)
    assert run_daemon(cfg) == 0
    hot = tmp_path / "hot"
    for path in files:
        records = list(read_capture(path))
        kinds = Counter(r.kind for r in records)
        lines = _lines(hot, path.name)
        envs = [parse_envelope(line) for line in lines]
        assert [e.seq for e in envs] == list(range(len(envs))), path.name
        feed = [(e, line) for e, line in zip(envs, lines, strict=True) if not is_own_ctl(e)]
        msgs = [line for e, line in feed if e.kind == "msg"]
        rests = [e for e, _ in feed if e.kind == "rest"]
        ctl = Counter(e.data["event"] for e, _ in feed if e.kind == "ctl")
        assert len(msgs) == kinds["recv"], path.name
        assert len(rests) == kinds["rest"], path.name
        assert ctl["connect"] == kinds["open"] and ctl["subscribe"] == kinds["sent"], path.name
        if path.name in README_RECV:
            assert len(msgs) == README_RECV[path.name]
        if path.name in README_REST:
            assert len(rests) == README_REST[path.name]
        recv = [r for r in records if r.kind == "recv"]
        assert [raw_payload(m) for m in msgs] == [r.payload for r in recv], path.name
        assert {e.ex for e, _ in feed} <= {exchange_from_filename(path.name)}
        assert [e.ts for e, _ in feed if e.kind == "msg"] == [r.ts for r in recv]
        assert all(r.url for r in rests)


def test_replay_recording_glob_merges_rest_snapshots_in_receive_order(
    captures: Path, tmp_path: Path
):
    pattern = str(captures / "BINANCE_FUTURES" / "BINANCE_FUTURES.*")
    cfg = make_config(tmp_path, [{"name": "bf", "type": "replay", "path": pattern}])
    assert run_daemon(cfg) == 0
    envs = [parse_envelope(line) for line in _lines(tmp_path / "hot", "bf")]
    feed = [e for e in envs if not is_own_ctl(e)]
    assert [e.ts for e in feed] == sorted(e.ts for e in feed)
    kinds = [e.kind for e in feed]
    assert kinds.count("msg") == 1535 and kinds.count("rest") == 5
    depth = [i for i, e in enumerate(feed) if e.kind == "rest" and "depth" in (e.url or "")]
    assert len(depth) == 4 and depth[0] > kinds.index("msg")  # snapshots land mid-stream
    assert {e.ex for e in feed} == {"binanceusdm"}


def test_replay_own_segments_reembeds_payloads_verbatim(captures: Path, tmp_path: Path):
    first = make_config(
        tmp_path / "a",
        [{"name": "kr", "type": "replay", "path": str(captures / "KRAKEN" / "KRAKEN.ws.50.0")}],
    )
    assert run_daemon(first) == 0
    segs = ready_files(tmp_path / "a" / "hot", "kr")
    second = make_config(
        tmp_path / "b",
        [{"name": "kr2", "type": "replay", "path": str(segs[0].parent / "segment_*.ndjson")}],
    )
    assert run_daemon(second) == 0
    a = [parse_envelope(x) for x in _lines(tmp_path / "a" / "hot", "kr")]
    b_lines = _lines(tmp_path / "b" / "hot", "kr2")
    a_lines = _lines(tmp_path / "a" / "hot", "kr")
    strip = [
        (e.ts, e.ex, e.kind, raw_payload(line))
        for e, line in zip(a, a_lines, strict=True)
        if not is_own_ctl(e)
    ]
    b = [parse_envelope(x) for x in b_lines]
    again = [
        (e.ts, e.ex, e.kind, raw_payload(line))
        for e, line in zip(b, b_lines, strict=True)
        if not is_own_ctl(e)
    ]
    assert again == strip and len(strip) > 2600
