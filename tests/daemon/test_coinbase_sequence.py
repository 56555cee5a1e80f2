"""Coinbase Advanced Trade sequence numbers, end to end: a real local websocket server sends a
level2 stream with one message missing; the daemon records a ``gap`` ctl record before the frame
that reveals it and reconnects for a fresh snapshot; the refinery ends the book epoch there
(gap ledger, with the daemon's reason) and rebuilds the book from the new snapshot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import yaml

from fluxforge import lake
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import is_own_ctl, iter_lines, parse_envelope
from fluxforge.storage import LocalStorage
from fluxforge.tables import at_lake_precision
from ingestion_daemon.service import Daemon

from .conftest import make_config, ready_files
from .test_live_sources import _run_until
from .wsserver import ReplayServer

STAMP = "2026-11-25T10:00:00.000000Z"
MISSING = 10  # the sequence number the venue "drops" on the first connection


def _frame(seq: int, kind: str, bids: list, asks: list) -> str:
    updates = [
        {"side": side, "event_time": STAMP, "price_level": px, "new_quantity": qty}
        for side, levels in (("bid", bids), ("offer", asks))
        for px, qty in levels
    ]
    event = {"type": kind, "product_id": "BTC-USD", "updates": updates}
    msg = {
        "channel": "l2_data",
        "client_id": "",
        "timestamp": STAMP,
        "sequence_num": seq,
        "events": [event],
    }
    return orjson.dumps(msg).decode()


def _connection(updates: int, skip: int | None = None) -> list[str]:
    """A snapshot (seq 0) then `updates` updates, each moving the best bid's size."""
    frames = [_frame(0, "snapshot", [("100.00", "1"), ("99.00", "2")], [("101.00", "3")])]
    for seq in range(1, updates + 1):
        if seq != skip:
            frames.append(_frame(seq, "update", [("100.00", f"{seq}.5")], []))
    return frames


def _run(
    tmp_path: Path, frames: list[str], plan: list, expect: int, check: bool = True
) -> ReplayServer:
    """Run the daemon until it has recorded `expect` frames."""
    server = ReplayServer(frames, plan=plan, subscribes=1)

    async def main() -> int:
        async with server.running():
            src = {
                "name": "cbat",
                "type": "coinbase",
                "url": server.url,
                "products": ["BTC-USD"],
                "channels": ["level2"],
                "silence_timeout_s": 30,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.2,
                "check_sequence": check,
            }
            cfg = make_config(tmp_path, [src])
            daemon = Daemon(cfg, list(cfg.sources), None)
            return await _run_until(daemon, lambda: daemon.units[0][0].frames >= expect)

    assert asyncio.run(main()) == 0
    return server


def _recorded(tmp_path: Path) -> list:
    return [
        parse_envelope(line)
        for f in ready_files(tmp_path / "hot", "cbat")
        for _, line in iter_lines(f.read_bytes())
    ]


def test_coinbase_sequence_gap_is_recorded_reconnects_and_ends_the_book_epoch(
    tmp_path: Path,
) -> None:
    first = _connection(19, skip=MISSING)
    second = _connection(9)
    # the first connection is read up to the frame after the hole, then dropped by the daemon
    expect = MISSING + 1 + len(second)  # seq 0..MISSING-1, MISSING+1, then the second
    plan = [(len(first), "silent"), (len(second), "stay")]
    server = _run(tmp_path, first + second, plan=plan, expect=expect)
    assert len(server.requests) == 2  # reconnected after the gap

    recorded = [e for e in _recorded(tmp_path) if not is_own_ctl(e)]
    gaps = [i for i, e in enumerate(recorded) if e.kind == "ctl" and e.data["event"] == "gap"]
    seq_gap = recorded[gaps[0]]
    assert seq_gap.data["reason"] == f"sequence gap: {MISSING - 1} then {MISSING + 1}"
    assert (seq_gap.data["from_seq"], seq_gap.data["to_seq"]) == (MISSING - 1, MISSING + 1)
    after = recorded[gaps[0] + 1]  # the frame that revealed it comes right after, verbatim
    assert after.kind == "msg" and after.data["sequence_num"] == MISSING + 1
    reasons = [
        e.data["reason"] for e in recorded if e.kind == "ctl" and e.data["event"] == "disconnect"
    ]
    assert reasons[0].startswith("sequence gap")
    msgs = [e for e in recorded if e.kind == "msg"]
    assert len(msgs) == expect
    assert [m.data["sequence_num"] for m in msgs[MISSING + 1 :]] == list(range(len(second)))

    cfg = make_config(tmp_path, [])
    report = process_ready(cfg)
    assert report.failed == []
    ledger = lake.read_table(LocalStorage(tmp_path / "hot"), "gap_ledger").to_pylist()
    book_gaps = [g for g in ledger if g["symbol"] == "BTC-USD"]
    assert book_gaps[0]["ts_to"] == at_lake_precision(seq_gap.ts)  # the lake keeps microseconds
    assert "sequence gap" in book_gaps[0]["detail"]
    book = {(b["exchange"], b["symbol"]): b for b in report.to_dict()["books"]}
    stats = book[("coinbase", "BTC-USD")]
    # the update after the hole is not applied: the book waits for the new snapshot
    assert stats["dropped_presync"] == 1 and stats["snapshots"] >= 2, stats
    reader = Reader(cfg)
    stale = reader.book_at("coinbase", "BTC-USD", after.ts)
    assert (stale.valid, stale.bids, stale.asks) == (False, [], [])
    assert stale.gap is not None and stale.gap["ts_to"] == at_lake_precision(seq_gap.ts)
    final = reader.book_at("coinbase", "BTC-USD", msgs[-1].ts)
    assert final.valid and final.book_epoch == stale.gap["book_epoch"] + 1
    want = [(Decimal("100"), Decimal("9.5")), (Decimal("99"), Decimal("2"))]
    assert final.bids == want and final.asks == [(Decimal("101"), Decimal("3"))]

    # the command line says so too: empty book on stdout, the reason on stderr
    conf = tmp_path / "query.yaml"
    conf.write_text(yaml.safe_dump({"storage": {"base_dir": str(tmp_path / "hot")}}))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "fluxforge.cli", "query", "book", "--config", str(conf)),
            *("--exchange", "coinbase", "--symbol", "BTC-USD", "--at", str(after.ts), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    book_json = orjson.loads(done.stdout)
    assert (book_json["bids"], book_json["asks"]) == ([], [])
    assert "no valid book" in done.stderr and "sequence gap" in done.stderr


def test_coinbase_sequence_check_off_records_without_reconnecting(tmp_path: Path) -> None:
    frames = _connection(19, skip=MISSING)
    server = _run(tmp_path, frames, plan=[(len(frames), "stay")], expect=len(frames), check=False)
    assert len(server.requests) == 1
    recorded = _recorded(tmp_path)
    assert not [e for e in recorded if e.kind == "ctl" and e.data["event"] == "gap"]
    assert len([e for e in recorded if e.kind == "msg"]) == len(frames)
