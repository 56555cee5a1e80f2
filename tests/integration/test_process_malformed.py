"""The malformed-input corpus (tests/fixtures/malformed/): bad JSON, truncated and torn lines,
non-UTF-8 bytes, unknown types, negative / NaN / huge / over-precise numbers, path-traversal
symbols and exchanges, crossed books, duplicate and out-of-order updates.

Never a crash; every bad line is quarantined with a reason and its raw bytes; the valid lines
around them still land in the lake; nothing is written outside the lake root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fluxforge import lake
from fluxforge.config import config_from_dict
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "malformed"
SEGMENT = "segment_20240102T03_00001.ndjson"


@pytest.fixture
def processed(tmp_path: Path):
    root = tmp_path / "data"
    ready = root / "raw" / "ready" / "fuzz"
    ready.mkdir(parents=True)
    shutil.copy(CORPUS / SEGMENT, ready / SEGMENT)
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(root)}}, environ={})
    report = process_ready(cfg)
    return tmp_path, root, report


def test_process_malformed_corpus_never_crashes_and_accounts_every_line(processed) -> None:
    _, root, report = processed
    classes = json.loads((CORPUS / "expected.json").read_text())["line_classes"]
    assert report.failed == [] and report.segments == [f"fuzz/{SEGMENT}"]
    assert report.lines == len(classes)
    assert report.lines == report.data + report.control + report.quarantined
    assert report.quarantined == classes.count("quarantined")
    assert report.control == classes.count("control")
    assert (root / "raw" / "archive" / "fuzz" / SEGMENT).is_file()


def test_process_malformed_corpus_bad_lines_quarantined_with_reason_and_raw(processed) -> None:
    _, root, _ = processed
    classes = json.loads((CORPUS / "expected.json").read_text())["line_classes"]
    raw_lines = (CORPUS / SEGMENT).read_bytes().split(b"\n")
    quarantine = lake.read_table(LocalStorage(root), "quarantine").to_pylist()
    expected = [i + 1 for i, c in enumerate(classes) if c == "quarantined"]
    assert sorted(row["line_no"] for row in quarantine) == expected
    for row in quarantine:
        assert row["reason"].strip(), row
        assert row["raw"] == raw_lines[row["line_no"] - 1]
        assert row["segment"] == SEGMENT
        assert row["exchange"] in ("coinbase", "binanceusdm", "kraken", "_unknown")
        assert row["symbol"] == "_all" and row["date"] == "2024-01-02"


def test_process_malformed_corpus_valid_lines_still_land(processed) -> None:
    _, root, report = processed
    storage = LocalStorage(root)
    trades = lake.read_table(storage, "trades")
    assert [str(p) for p in trades.column("price").to_pylist()] == [
        "100.500000000000",
        "100.250000000000",
    ]
    books = {(b["exchange"], b["symbol"]): b for b in report.to_dict()["books"]}
    # duplicate / out-of-order Binance updates break the pu chain: recorded, never continued
    assert books[("binanceusdm", "SUSHI-USDT")]["chain_breaks"] >= 1
    assert books[("coinbase", "BTC-USD")]["crossed"] >= 1  # counted, not hidden
    gaps = lake.read_table(storage, "gap_ledger").to_pylist()
    causes = {(g["exchange"], g["cause"]) for g in gaps}
    assert ("binanceusdm", "chain_break") in causes
    assert ("coinbase", "reconnect") in causes  # the ctl disconnect ended the epoch


def test_process_malformed_corpus_nothing_escapes_the_lake_root(processed) -> None:
    tmp_path, root, _ = processed
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]
    assert outside == []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        assert ".." not in rel.split("/") and "\\" not in rel, rel
        assert "etc" not in rel.split("/"), rel


def test_process_empty_and_blank_segments_are_archived_with_zero_lines(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ready = root / "raw" / "ready" / "fuzz"
    ready.mkdir(parents=True)
    (ready / "segment_20240102T03_00001.ndjson").write_bytes(b"")
    (ready / "segment_20240102T03_00002.ndjson").write_bytes(b"\n  \n\r\n\n")
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(root)}}, environ={})
    report = process_ready(cfg)
    assert report.failed == [] and len(report.segments) == 2
    assert (report.lines, report.data, report.control, report.quarantined) == (0, 0, 0, 0)
    assert report.files == []
    assert len(list((root / "raw" / "archive" / "fuzz").glob("segment_*"))) == 2
