"""End to end on the real captures: replay every capture through the ingestion daemon (replay
source, speed 0), then `fluxforge process`, and check the venues' own integrity rules, the
trade count, line accounting, idempotence and segment-boundary invariance.

Expected figures come from ../shared/data/README.md ("Integrity rules"): Kraken 2595/2595,
OKX 98/98 and Bitget 194/194 checksums; Binance USD-M 748 pu links + 4 snapshot bridges, 12
events dropped before the snapshots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from fluxforge import demux, lake
from fluxforge.captures import exchange_from_filename, read_capture
from fluxforge.config import load_config
from fluxforge.refinery import claim, list_segments, process_claimed, process_ready, rebuild
from fluxforge.storage import LocalStorage

pytestmark = pytest.mark.slow

# per-table columns that name the segment (they differ by construction when segments differ)
SEGMENT_COLUMNS = {"quarantine": ["segment", "line_no"], "gap_ledger": ["segment"]}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}


def write_config(root: Path, inputs: str, **ingestion: int) -> Path:
    cfg = {
        "storage": {"backend": "local", "base_dir": str(root / "data")},
        "sources": [{"name": "replay", "type": "replay", "path": inputs, "speed": 0}],
        "ingestion": ingestion,
    }
    path = root / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def replay(root: Path, inputs: str, **ingestion: int) -> Path:
    """Daemon replay of `inputs` (glob) at speed 0 into root/data/raw/ready; returns config."""
    cfg = write_config(root, inputs, **ingestion)
    done = cli("ingest", "--config", str(cfg), "--source", "replay", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((root / "data/raw/ready/replay").glob("segment_*.ndjson")), done.stderr[-2000:]
    return cfg


def lake_files(root: Path) -> dict[str, bytes]:
    base = root / "data" / "processed"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.parquet"))}


def all_tables(cfg_path: Path) -> dict[str, pa.Table]:
    cfg = load_config(cfg_path, environ={})
    storage = LocalStorage(cfg.storage.etl_output.base_dir)
    out = {}
    for table in lake.TABLES:
        data = lake.read_table(storage, table)
        out[table] = data.drop_columns(SEGMENT_COLUMNS.get(table, []))
    return out


def books_by_exchange(report: dict) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for book in report["books"]:
        out.setdefault(book["exchange"], Counter()).update(
            {k: v for k, v in book.items() if isinstance(v, int)}
        )
    return out


def count_trade_messages(captures: Path) -> Counter:
    """Trades per exchange counted straight from the capture files (independent of the
    normalizers): Coinbase match/last_match, Binance aggTrade/trade, Kraken trade rows, OKX
    trades rows, Bitget trade rows of `update` pushes (snapshots replay trades from before
    the subscription and carry no trade id, so they are not new trades)."""
    counts: Counter = Counter()
    for path in sorted(captures.glob("*/*")):
        ex = exchange_from_filename(path.name)
        for rec in read_capture(path):
            if rec.kind != "recv":
                continue
            msg = json.loads(rec.payload)
            if ex == "coinbase" and isinstance(msg, dict):
                counts[ex] += msg.get("type") in ("match", "last_match")
            elif ex == "binanceusdm" and isinstance(msg, dict):
                counts[ex] += msg.get("data", {}).get("e") in ("aggTrade", "trade")
            elif ex == "kraken" and isinstance(msg, list) and msg[-2] == "trade":
                counts[ex] += len(msg[1])
            elif (
                ex == "okx"
                and isinstance(msg, dict)
                and msg.get("arg", {}).get("channel") == ("trades")
            ) or (
                ex == "bitget"
                and isinstance(msg, dict)
                and msg.get("arg", {}).get("channel") == "trade"
                and msg.get("action") == "update"
            ):
                counts[ex] += len(msg.get("data", []))
    return counts


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> tuple[Path, Path, dict]:
    """All captures replayed (default segment size) and processed by `fluxforge process
    --json` in a subprocess."""
    root = tmp_path_factory.mktemp("whole")
    cfg = replay(root, str(captures / "*" / "*"))
    done = cli("process", "--config", str(cfg), "--json", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got {done.stdout[:500]!r}"
    return root, cfg, json.loads(lines[0])


def test_process_captures_every_checksum_and_chain_verified(whole) -> None:
    _, cfg, report = whole
    assert all_tables(cfg)["book_drift"].num_rows == 0
    ex = books_by_exchange(report)
    assert ex["kraken"]["checksums_verified"] == 2595
    assert ex["okx"]["checksums_verified"] == 98
    assert ex["bitget"]["checksums_verified"] == 194
    for venue in ("kraken", "okx", "bitget"):
        assert ex[venue]["checksum_mismatches"] == 0, venue
    binance = ex["binanceusdm"]
    assert binance["chain_links_verified"] == 748 + 4  # pu links + snapshot bridges
    assert binance["chain_breaks"] == 0
    assert binance["dropped_presync"] == 12
    assert all(book["gaps"] == 0 for book in report["books"]), report["books"]
    # no venue snapshot disagrees with the replayed book (tests/integration/
    # test_book_drift_captures.py inserts mid-stream snapshots to make the comparison bite)
    assert sum(book["drifts"] for book in report["books"]) == 0
    assert len([b for b in report["books"] if b["exchange"] == "coinbase"]) == 10
    for book in report["books"]:
        assert {"exchange", "symbol", "book_updates", "snapshots"} <= set(book)


def test_process_captures_trade_rows_equal_capture_trade_messages(whole, captures: Path) -> None:
    _, cfg, report = whole
    expected = count_trade_messages(captures)
    trades = all_tables(cfg)["trades"]
    got = Counter(trades.column("exchange").to_pylist())
    assert got == expected
    assert report["trades"] == sum(expected.values())


def test_process_captures_lines_accounted_nothing_quarantined(whole) -> None:
    root, _, report = whole
    assert report["lines"] == report["data"] + report["control"] + report["quarantined"]
    assert report["quarantined"] == 0 and report["normalizer_errors"] == 0
    assert report["failed"] == [] and report["segments_processed"] >= 4
    archived = list((root / "data/raw/archive/replay").glob("segment_*.ndjson"))
    assert len(archived) == report["segments_processed"]
    assert not list((root / "data/raw/ready/replay").glob("segment_*"))
    assert not list((root / "data/raw/processing").rglob("segment_*"))


def test_process_captures_reprocess_archived_is_byte_identical(whole, tmp_path: Path) -> None:
    root, cfg_path, _ = whole
    before = lake_files(root)
    cfg = load_config(cfg_path, environ={})
    # rebuild (backfill) every day from the archive
    dates = sorted({ref.date for ref in list_segments(cfg, "archive")})
    for date in dates:
        rebuild(cfg, "replay", date)
    assert lake_files(root) == before
    # put the raw segments back into ready/ and process them again
    archive = root / "data/raw/archive/replay"
    ready = root / "data/raw/ready/replay"
    for seg in sorted(archive.glob("segment_*.ndjson")):
        shutil.move(seg, ready / seg.name)
    again = process_ready(cfg)
    assert again.failed == [] and again.segments
    assert lake_files(root) == before


def split_segments(archive: Path, ready: Path, lines_per_segment: int) -> int:
    """The same raw lines, cut into many small segments (same hour, increasing counter)."""
    ready.mkdir(parents=True, exist_ok=True)
    counter = 0
    for seg in sorted(archive.glob("segment_*.ndjson")):
        hour = seg.name.split("_")[1]
        lines = seg.read_bytes().splitlines(keepends=True)
        for i in range(0, len(lines), lines_per_segment):
            counter += 1
            chunk = b"".join(lines[i : i + lines_per_segment])
            (ready / f"segment_{hour}_{counter:05d}.ndjson").write_bytes(chunk)
    return counter


def test_process_captures_segment_boundaries_do_not_change_tables(whole, tmp_path: Path) -> None:
    root, whole_cfg, _ = whole
    cfg_path = write_config(tmp_path, "unused")
    n = split_segments(
        root / "data/raw/archive/replay", tmp_path / "data/raw/ready/replay", lines_per_segment=400
    )
    assert n > 30
    cfg = load_config(cfg_path, environ={})
    refs = list_segments(cfg, "ready")
    # the first half one segment per call, the rest in one batch
    for ref in refs[: len(refs) // 2]:
        assert claim(cfg, ref)
        assert process_claimed(cfg, [ref]).failed == []
    assert process_ready(cfg).failed == []
    small, big = all_tables(cfg_path), all_tables(whole_cfg)
    for table in lake.TABLES:
        if table == "feed_stats":  # rows per segment by design; hours merged in
            continue  # test_feed_stats_captures.py
        assert small[table].num_rows == big[table].num_rows, table
        assert small[table].equals(big[table]), table
    assert big["book_deltas"].num_rows > 50_000 and big["book_snapshots"].num_rows > 20


def test_process_captures_altered_level_reports_mismatch_and_ends_epoch(
    tmp_path: Path, captures: Path
) -> None:
    """One size of the best ask in a Kraken book snapshot changed by one digit: the next
    checksum must fail, end the epoch and write a gap row (never silently continued)."""
    src = (captures / "KRAKEN" / "KRAKEN.ws.50.0").read_bytes()
    start = src.index(b'"as":[["')
    size_start = src.index(b'","', start) + 3
    size_end = src.index(b'"', size_start)
    size = src[size_start:size_end]
    altered = size[:-1] + (b"1" if size[-1:] != b"1" else b"2")
    copy = tmp_path / "captures" / "KRAKEN"
    copy.mkdir(parents=True)
    (copy / "KRAKEN.ws.50.0").write_bytes(src[:size_start] + altered + src[size_end:])
    cfg_path = replay(tmp_path, str(copy / "*"))
    report = process_ready(load_config(cfg_path, environ={})).to_dict()
    assert report["failed"] == []
    books = report["books"]
    assert sum(b["checksum_mismatches"] for b in books) >= 1
    assert sum(b["checksums_verified"] for b in books) < 2595
    gaps = all_tables(cfg_path)["gap_ledger"].to_pylist()
    assert gaps and {g["cause"] for g in gaps} == {"checksum_mismatch"}
    assert all(g["exchange"] == "kraken" for g in gaps)
    # the ended epoch never continues: no delta of that epoch after the mismatch
    gap = gaps[0]
    deltas = all_tables(cfg_path)["book_deltas"]
    late = [
        row
        for row in deltas.to_pylist()
        if row["symbol"] == gap["symbol"]
        and row["book_epoch"] == gap["book_epoch"]
        and row["ts_recv"] > gap["ts_to"]
    ]
    assert late == []


def test_process_captures_fast_path_equals_per_line_path(
    whole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The columnar Coinbase path and the per-line normalizer give the same tables."""
    root, whole_cfg, _ = whole
    cfg_path = write_config(tmp_path, "unused")
    ready = tmp_path / "data/raw/ready/replay"
    ready.mkdir(parents=True)
    for seg in sorted((root / "data/raw/archive/replay").glob("segment_*.ndjson")):
        shutil.copy(seg, ready / seg.name)
    monkeypatch.setattr(demux, "FAST_PATH", False)
    assert process_ready(load_config(cfg_path, environ={})).failed == []
    slow, fast = all_tables(cfg_path), all_tables(whole_cfg)
    for table in lake.TABLES:
        assert slow[table].equals(fast[table]), table
    assert lake_files(tmp_path) == lake_files(root)


def test_process_captures_coverage_from_manifests_equals_coverage_read_from_parts(
    whole, tmp_path: Path
) -> None:
    """Each segment's manifest carries its share of the coverage view; summed over a
    partition (here 30+ small segments) it equals coverage computed by reading every part."""
    from fluxforge import quality
    from fluxforge.storage import Layout

    root, _, _ = whole
    cfg_path = write_config(tmp_path, "unused")
    split_segments(
        root / "data/raw/archive/replay", tmp_path / "data/raw/ready/replay", lines_per_segment=400
    )
    cfg = load_config(cfg_path, environ={})
    assert process_ready(cfg).failed == []
    storage = LocalStorage(tmp_path / "data")
    layout = Layout.of(cfg.storage.etl_output)
    dates = sorted({ref.date for ref in list_segments(cfg, "archive", "replay")})
    manifests = list((tmp_path / "data/state/segments/replay").glob("*.json"))
    assert len(manifests) > 30
    assert all("coverage" in json.loads(m.read_bytes()) for m in manifests)  # no fallback read
    compared = 0
    for date in dates:
        segments = quality.archived_segments(cfg, "replay", date)
        summed = quality.partition_coverage(cfg, "replay", date)
        read = quality.parts_coverage(storage, layout, "replay", date, segments)
        assert summed.num_rows > 0 and summed.equals(read), date
        compared += summed.num_rows
    assert compared > 20
