"""The per-segment cost of one lake table's Delta work as a function of its checkpoint interval.

For each interval, a table on local disk is given `--files` active files (one commit, then a
checkpoint: the state of a table right after one), then `--commits` segments are published
into it the way the refinery publishes one (``refinery._published`` / ``_publish``): a fresh
``Lake`` (a new run opens the table: last checkpoint plus every commit after it), the app
transaction asked, then one commit of `--per-commit` files carrying it; delta-rs writes a
checkpoint itself when a commit's version is a multiple of the interval. Files are log
entries only (no Parquet written): the bench measures the log.

Prints, per interval, the CPU (process time: delta-rs works on its own threads) per segment,
average and worst, lowest of `--rounds` alternating rounds per segment. ``--keep-open`` keeps
one ``Lake`` for all segments (a long run: the handle is refreshed, not reopened).

    uv run python benchmarks/bench_checkpoint.py [--files 2000] [--commits 100]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from fluxforge import lake as lakemod
from fluxforge.lake import Lake, Staged
from fluxforge.storage import LocalStorage, Storage

TABLE = "trades"


def _staged(n: int, start: int, lake: Lake) -> list[Staged]:
    """`n` synthetic files (log entries with realistic statistics), numbered from `start`."""
    out = []
    prefix = lake.layout.lake_table(TABLE) + "/"
    for i in range(start, start + n):
        ex, sym, day = f"ex{i % 4}", f"SYM{i % 25}-USD", f"2026-{1 + i // 3000 % 12:02d}-01"
        path = f"exchange={ex}/symbol={sym}/date={day}/part-seg{i:08d}-v1-{i:012x}.parquet"
        stats = orjson.dumps(
            {
                "numRecords": 5000,
                "minValues": {"ts_recv": "2026-01-01T00:00:00.000000Z", "seq": i, "line_no": 0},
                "maxValues": {"ts_recv": "2026-01-01T00:05:00.000000Z", "seq": i + 1, "line_no": 9},
                "nullCount": {"ts_recv": 0, "seq": 0, "line_no": 0},
            }
        ).decode()
        out.append(Staged(TABLE, prefix + path, path, ex, sym, day, 5000, 150_000, stats))
    return out


def run(
    storage: Storage, interval: int, files: int, commits: int, per: int, keep: bool
) -> tuple[list[float], list[float]]:
    """(CPU, wall) seconds of each segment's table work into a new table at `interval` in
    `storage` (empty)."""
    lakemod.TABLE_CONFIG = {"delta.checkpointInterval": str(interval)}
    lake = Lake(storage)
    lake.ensure(TABLE)
    lake.commit(TABLE, _staged(files, 0, lake))
    handle = lake.table(TABLE)
    assert handle is not None
    handle.create_checkpoint()
    cpu, wall = [], []
    next_file = files
    for seg in range(commits):
        batch = _staged(per, next_file, lake)
        next_file += per
        t0, w0 = time.process_time(), time.perf_counter()
        if not keep:
            lake = Lake(storage)
        done = lake.transaction_version(TABLE, "bench")
        assert done is None or done < seg
        assert lake.commit(TABLE, batch, app=("bench", seg))
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    return cpu, wall


def _local(tmp: str) -> Callable[[], Storage]:
    def fresh() -> Storage:
        root = Path(tmp) / "lake"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        return LocalStorage(str(root))

    return fresh


def bench(
    fresh: Callable[[], Storage],
    intervals: list[int],
    rounds: int,
    files: int,
    commits: int,
    per: int,
    keep: bool,
) -> dict[int, tuple[list[float], list[float]]]:
    """Per interval: (CPU, wall) per segment, each the lowest of `rounds` alternating rounds."""
    best: dict[int, tuple[list[float], list[float]]] = {}
    for r in range(rounds):
        # alternate the order between rounds (the machine's speed drifts)
        for iv in intervals if r % 2 == 0 else intervals[::-1]:
            cpu, wall = run(fresh(), iv, files, commits, per, keep)
            if iv in best:
                cpu = [min(x, y) for x, y in zip(best[iv][0], cpu, strict=True)]
                wall = [min(x, y) for x, y in zip(best[iv][1], wall, strict=True)]
            best[iv] = (cpu, wall)
    return best


def report(best: dict[int, tuple[list[float], list[float]]]) -> None:
    print("interval  CPU avg ms  CPU worst ms  CPU p90 ms  wall avg ms  wall worst ms")
    for iv, (cpu, wall) in best.items():
        c, w = sorted(cpu), sorted(wall)
        print(
            f"{iv:8d}  {sum(c) / len(c) * 1e3:10.1f}  {c[-1] * 1e3:12.1f}  "
            f"{c[int(len(c) * 0.9)] * 1e3:10.1f}  {sum(w) / len(w) * 1e3:11.1f}  "
            f"{w[-1] * 1e3:13.1f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--commits", type=int, default=100)
    p.add_argument("--per-commit", type=int, default=20)
    p.add_argument("--intervals", default="10,20,50,100")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep-open", action="store_true")
    a = p.parse_args()
    intervals = [int(x) for x in a.intervals.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        best = bench(
            _local(tmp), intervals, a.rounds, a.files, a.commits, a.per_commit, a.keep_open
        )
    mode = "one Lake for all segments" if a.keep_open else "a fresh Lake per segment"
    print(
        f"{a.files} files, then {a.commits} commits of {a.per_commit} files; {mode}; "
        f"lowest of {a.rounds} rounds per segment"
    )
    report(best)


if __name__ == "__main__":
    main()
