"""Daemon append benchmark: envelope + write into /dev/shm through the real SegmentWriter.

Prints messages/s and p50/p99 per-append latency for realistic frames (the Coinbase capture's
received frames when ``../shared/data/captures`` or $FLUXFORGE_CAPTURES is there, else the
synthetic source's frames), next to a baseline in the same run: plain buffered ``file.write`` of
the very same envelope bytes (so the ratio is the cost of FluxForge's envelope building, seq
bookkeeping, batching and rotation checks). A second FluxForge row includes the per-frame JSON
validation (``frame_payload``) that live sources do before appending.

    uv run python benchmarks/bench_daemon_append.py [--messages N]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from fluxforge.captures import read_capture
from fluxforge.config import config_from_dict
from fluxforge.segments import frame_payload
from ingestion_daemon.writer import SegmentWriter

REPO = Path(__file__).resolve().parent.parent


def load_frames() -> tuple[list[bytes], str]:
    root = Path(os.environ.get("FLUXFORGE_CAPTURES") or REPO.parent / "shared/data/captures")
    cap = root / "COINBASE" / "COINBASE.ws.28.0"
    if cap.is_file():
        frames = [r.payload for r in read_capture(cap) if r.kind == "recv"]
        return frames, f"{cap.name} ({len(frames)} received frames)"
    from fluxforge.config import SourceConfig
    from ingestion_daemon.sources.synthetic import SyntheticSource

    class _Sink:
        def __init__(self) -> None:
            self.frames: list[bytes] = []
            self.clock = time.time_ns

        def append(self, ts, payload, kind="msg", ex=None):
            self.frames.append(payload)

        def ctl(self, *a, **k):
            pass

    src = SyntheticSource(SourceConfig(name="bench", type="synthetic"), None)  # type: ignore[arg-type]
    sink = _Sink()
    src._opening(sink)  # type: ignore[arg-type]
    for _ in range(10_000):
        src._one(sink, time.time_ns())  # type: ignore[arg-type]
    return sink.frames, f"synthetic ({len(sink.frames)} frames)"


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(int(len(sorted_ns) * q), len(sorted_ns) - 1)] / 1000


def make_writer(base: Path) -> SegmentWriter:
    cfg = config_from_dict({"storage": {"base_dir": str(base)}}, environ={})
    w = SegmentWriter(cfg, "bench", default_ex="coinbase")
    w.open()
    return w


def run_fluxforge(
    base: Path, frames: list[bytes], n: int, validate: bool
) -> tuple[float, list[int]]:
    w = make_writer(base)
    ts0 = time.time_ns()
    nf = len(frames)
    gc.disable()
    t0 = time.perf_counter()
    append = w.append
    if validate:
        for i in range(n):
            append(ts0 + i, frame_payload(frames[i % nf]))
    else:
        for i in range(n):
            append(ts0 + i, frames[i % nf])
    w.flush()
    elapsed = time.perf_counter() - t0
    lat = []
    clock = time.perf_counter_ns
    for i in range(n):
        f = frames[i % nf]
        s = clock()
        append(ts0 + n + i, frame_payload(f) if validate else f)
        lat.append(clock() - s)
    gc.enable()
    w.close()
    return n / elapsed, sorted(lat)


def run_baseline(base: Path, lines: list[bytes], n: int) -> tuple[float, list[int]]:
    base.mkdir(parents=True, exist_ok=True)
    nl = len(lines)
    gc.disable()
    with open(base / "baseline.ndjson", "wb", buffering=1 << 20) as fh:
        write = fh.write
        t0 = time.perf_counter()
        for i in range(n):
            write(lines[i % nl])
        fh.flush()
        elapsed = time.perf_counter() - t0
        lat = []
        clock = time.perf_counter_ns
        for i in range(n):
            s = clock()
            write(lines[i % nl])
            lat.append(clock() - s)
    gc.enable()
    return n / elapsed, sorted(lat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    frames, what = load_frames()
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    base = Path(tempfile.mkdtemp(prefix="fluxforge-bench-", dir=shm))
    try:
        # the same bytes the writer produces, for the baseline
        w = make_writer(base / "probe")
        lines = [
            b'{"ts":%d,"src":"bench","ex":"coinbase","seq":%d,"kind":"msg","data":%b}\n'
            % (time.time_ns(), i, f)
            for i, f in enumerate(frames)
        ]
        w.close()
        avg = statistics.mean(len(x) for x in lines)
        print(
            f"frames: {what}, avg envelope line {avg:.0f} B, {args.messages:,} appends, into {shm}"
        )
        rows = [
            ("baseline file.write", run_baseline(base / "baseline", lines, args.messages)),
            ("fluxforge append", run_fluxforge(base / "ff", frames, args.messages, False)),
            ("fluxforge append+validate", run_fluxforge(base / "ffv", frames, args.messages, True)),
        ]
        base_rate = rows[0][1][0]
        print(f"{'':28s} {'msg/s':>12s} {'p50 us':>8s} {'p99 us':>8s} {'max us':>9s} {'ratio':>7s}")
        for name, (rate, lat) in rows:
            print(
                f"{name:28s} {rate:12,.0f} {pct(lat, 0.5):8.2f} {pct(lat, 0.99):8.2f} "
                f"{lat[-1] / 1000:9.1f} {rate / base_rate:7.2f}"
            )
        ff_rate, ff_lat = rows[1][1]
        ok = ff_rate >= 300_000 and pct(ff_lat, 0.99) <= 20
        print(f"target >= 300k msg/s and p99 <= 20 us: {'met' if ok else 'NOT met'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
