"""Book drift on real captures: a venue snapshot inserted mid-stream (as a re-subscription would
send it), built here from the capture's own messages with an independent dict book, is compared
with the replayed book. Kraken (checksummed): zero drift and every checksum still verified;
Coinbase: zero drift, and drift exactly at that snapshot when one earlier update is altered."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from replayed import replay

from fluxforge import lake
from fluxforge.config import load_config
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage

pytestmark = pytest.mark.slow


def _run(root: Path, name: str, lines: list[str]) -> tuple[dict, dict]:
    folder = root / "captures" / name.split(".")[0]
    folder.mkdir(parents=True)
    (folder / name).write_text("".join(lines))
    cfg = load_config(replay(root, str(folder / "*")), environ={})
    report = process_ready(cfg).to_dict()
    assert report["failed"] == []
    storage = LocalStorage(root / "data")
    tables = {t: lake.read_table(storage, t).to_pylist() for t in ("book_drift", "gap_ledger")}
    return report, tables


def _split(line: str) -> tuple[str, object]:
    ts, _, payload = line.partition(": ")
    return ts, json.loads(payload)


def _received(lines: list[str]) -> list[tuple[int, str, object]]:
    out = []
    for i, line in enumerate(lines):
        if line[:1].isdigit() and ": " in line:
            ts, msg = _split(line)
            out.append((i, ts, msg))
    return out


# ---------------------------------------------------------------- Coinbase (no checksum)


def _coinbase_snapshot(lines: list[str], product: str, upto: int) -> str:
    """The venue book of `product` after the capture's lines before `upto`, as a snapshot."""
    book: dict[str, dict[Decimal, str]] = {"buy": {}, "sell": {}}
    for _, _, msg in _received(lines[:upto]):
        if not isinstance(msg, dict) or msg.get("product_id") != product:
            continue
        if msg["type"] == "snapshot":
            book["buy"] = {Decimal(p): s for p, s in msg["bids"]}
            book["sell"] = {Decimal(p): s for p, s in msg["asks"]}
        elif msg["type"] == "l2update":
            for side, px, size in msg["changes"]:
                if Decimal(size) == 0:
                    book[side].pop(Decimal(px), None)
                else:
                    book[side][Decimal(px)] = size
    bids = [[str(p), book["buy"][p]] for p in sorted(book["buy"], reverse=True)]
    asks = [[str(p), book["sell"][p]] for p in sorted(book["sell"])]
    snap = {"type": "snapshot", "product_id": product, "bids": bids, "asks": asks}
    return json.dumps(snap, separators=(",", ":"))


def _updates(lines: list[str], product: str) -> list[tuple[int, str, list]]:
    return [
        (i, ts, msg["changes"][0])
        for i, ts, msg in _received(lines)
        if isinstance(msg, dict)
        and msg.get("type") == "l2update"
        and msg.get("product_id") == product
    ]


def _with_snapshot(lines: list[str], product: str, at: int) -> list[str]:
    ts = _split(lines[at - 1])[0]
    return [*lines[:at], f"{ts}: {_coinbase_snapshot(lines, product, at)}\n", *lines[at:]]


def test_book_drift_coinbase_snapshot_equal_to_replayed_book_gives_no_drift(
    tmp_path: Path, captures: Path
) -> None:
    lines = (captures / "COINBASE" / "COINBASE.ws.28.0").read_text().splitlines(keepends=True)
    updates = _updates(lines, "SKL-USD")
    at = updates[1500][0] + 1
    report, tables = _run(tmp_path, "COINBASE.ws.28.0", _with_snapshot(lines, "SKL-USD", at))
    (book,) = [b for b in report["books"] if b["symbol"] == "SKL-USD"]
    assert book["drift_checks"] == 1 and book["drifts"] == 0
    assert tables["book_drift"] == [] and tables["gap_ledger"] == []


def test_book_drift_coinbase_altered_update_found_at_the_next_snapshot(
    tmp_path: Path, captures: Path
) -> None:
    lines = (captures / "COINBASE" / "COINBASE.ws.28.0").read_text().splitlines(keepends=True)
    updates = _updates(lines, "SKL-USD")
    at = updates[1500][0] + 1
    with_snap = _with_snapshot(lines, "SKL-USD", at)  # the venue's true book

    # alter one earlier update whose level nothing touches again before the snapshot
    def untouched_later(k: int) -> bool:
        side, px, size = updates[k][2]
        return Decimal(size) > 0 and all(
            (s, Decimal(p)) != (side, Decimal(px)) for _, _, (s, p, _) in updates[k + 1 : 1501]
        )

    i, ts, (side, px, size) = updates[next(k for k in range(600, 1500) if untouched_later(k))]
    altered = str(Decimal(size) + 1)
    msg = json.loads(with_snap[i].partition(": ")[2])
    msg["changes"] = [[side, px, altered]]
    with_snap[i] = f"{ts}: {json.dumps(msg, separators=(',', ':'))}\n"
    report, tables = _run(tmp_path, "COINBASE.ws.28.0", with_snap)
    (book,) = [b for b in report["books"] if b["symbol"] == "SKL-USD"]
    assert book["drift_checks"] == 1 and book["drifts"] == 1
    (row,) = tables["book_drift"]
    assert row["symbol"] == "SKL-USD" and row["integrity"] == "none"
    assert row["levels_differing"] == 1 and row["max_size_diff"] == Decimal(1)
    assert row["book_epoch"] == 1
    (gap,) = tables["gap_ledger"]
    assert gap["cause"] == "book_drift" and gap["ts_to"] == row["ts_recv"]
    assert gap["book_epoch"] == 1


# ---------------------------------------------------------------- Kraken (checksummed)


def _kraken_snapshot(lines: list[str], pair: str, upto: int) -> str:
    """Kraken's book-1000 of `pair` after the lines before `upto` (levels as [px, vol, ts])."""
    chan = None
    book: dict[str, dict[Decimal, list]] = {"a": {}, "b": {}}
    for _, _, msg in _received(lines[:upto]):
        if not isinstance(msg, list) or msg[-1] != pair:
            continue
        chan = msg[0]
        for payload in msg[1:-2]:
            if "as" in payload:
                book = {
                    "a": {Decimal(lv[0]): lv[:3] for lv in payload["as"]},
                    "b": {Decimal(lv[0]): lv[:3] for lv in payload["bs"]},
                }
                continue
            for key in ("a", "b"):
                for lv in payload.get(key, []):
                    if Decimal(lv[1]) == 0:
                        book[key].pop(Decimal(lv[0]), None)
                    else:
                        book[key][Decimal(lv[0])] = lv[:3]
            for key, best_first in (("a", sorted), ("b", lambda x: sorted(x, reverse=True))):
                keep = best_first(book[key])[:1000]
                book[key] = {p: book[key][p] for p in keep}
    asks = [book["a"][p] for p in sorted(book["a"])]
    bids = [book["b"][p] for p in sorted(book["b"], reverse=True)]
    return json.dumps([chan, {"as": asks, "bs": bids}, "book-1000", pair], separators=(",", ":"))


def test_book_drift_kraken_mid_stream_snapshot_gives_no_drift_and_checksums_hold(
    tmp_path: Path, captures: Path
) -> None:
    lines = (captures / "KRAKEN" / "KRAKEN.ws.50.0").read_text().splitlines(keepends=True)
    xmr = [i for i, _, m in _received(lines) if isinstance(m, list) and m[-1] == "XMR/USD"]
    at = xmr[400] + 1
    ts = _split(lines[at - 1])[0]
    edited = [*lines[:at], f"{ts}: {_kraken_snapshot(lines, 'XMR/USD', at)}\n", *lines[at:]]
    report, tables = _run(tmp_path, "KRAKEN.ws.50.0", edited)
    books = [b for b in report["books"] if b["exchange"] == "kraken"]
    assert sum(b["checksums_verified"] for b in books) == 2595
    assert sum(b["checksum_mismatches"] for b in books) == 0
    (xmr_book,) = [b for b in books if b["symbol"] == "XMR-USD"]
    assert xmr_book["drift_checks"] == 1 and xmr_book["drifts"] == 0
    assert tables["book_drift"] == [] and tables["gap_ledger"] == []
