"""book_at against independent rebuilds from the raw captures (issue 6, tests)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.config import Config, config_from_dict
from fluxforge.query import QueryError, Reader, parse_time
from fluxforge.segments import encode_ctl, encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage


def _write_segment(cfg: Config, source: str, files: list[Path]) -> None:
    """One ready segment per recording, the way the replay source writes it."""
    lines = []
    seq = 0
    first_ts = None
    for rec in merge_captures(files):
        if rec.kind not in ("recv", "rest", "open"):
            continue
        ex = exchange_from_filename(rec.file)
        first_ts = first_ts or rec.ts
        seq += 1
        if rec.kind == "open":
            lines.append(encode_ctl(rec.ts, source, ex, seq, "connect", url=rec.url))
        else:
            kind = "msg" if rec.kind == "recv" else "rest"
            lines.append(
                encode_envelope(rec.ts, source, ex, seq, kind, frame_payload(rec.payload), rec.url)
            )
    hour = datetime.fromtimestamp(first_ts // 1_000_000_000, tz=UTC)
    layer = cfg.storage.ingestion
    key = Layout.of(layer).segment("ready", source, segment_name(hour, 1))
    LocalStorage(layer.base_dir).write_bytes(key, b"".join(lines))


@pytest.fixture(scope="module")
def lake(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    from fluxforge.refinery import process_ready

    base = tmp_path_factory.mktemp("lake")
    cfg = config_from_dict({"storage": {"backend": "local", "base_dir": str(base)}}, environ={})
    _write_segment(
        cfg,
        "binance",
        sorted((captures / "BINANCE_FUTURES").glob("*.ws.*"))
        + sorted((captures / "BINANCE_FUTURES").glob("*.http.*")),
    )
    _write_segment(cfg, "kraken", [captures / "KRAKEN" / "KRAKEN.ws.50.0"])
    report = process_ready(cfg)
    assert not report.failed
    return cfg


def _binance_events(captures: Path):
    snaps, events = {}, []
    for rec in merge_captures(sorted((captures / "BINANCE_FUTURES").glob("BINANCE_FUTURES.*.*"))):
        if rec.kind == "rest" and "depth" in (rec.url or ""):
            body = orjson.loads(rec.payload)
            sym = rec.url.split("symbol=")[1].split("&")[0]
            snaps[sym] = (rec.ts, body)
        elif rec.kind == "recv":
            events.append((rec.ts, orjson.loads(rec.payload)["data"], dict(snaps)))
    return events


def test_book_at_every_binance_depth_update_equals_independent_rebuild(
    lake: Config, captures: Path
) -> None:
    reader = Reader(lake)
    books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    last_u: dict[str, int] = {}
    ticker: dict[str, dict] = {}
    compared = tops = 0
    for ts, ev, snaps in _binance_events(captures):
        sym = ev["s"]
        if ev["e"] == "bookTicker":
            ticker.setdefault(sym, []).append(ev)
            continue
        if ev["e"] != "depthUpdate" or sym not in snaps:
            continue
        _, snap = snaps[sym]
        if sym not in books:
            if ev["u"] < snap["lastUpdateId"]:
                continue
            assert ev["U"] <= snap["lastUpdateId"] <= ev["u"]
            books[sym] = {
                "bid": {Decimal(p): Decimal(q) for p, q in snap["bids"]},
                "ask": {Decimal(p): Decimal(q) for p, q in snap["asks"]},
            }
        else:
            assert ev["pu"] == last_u[sym]
        last_u[sym] = ev["u"]
        for side, key in (("bid", "b"), ("ask", "a")):
            for p, q in ev[key]:
                if Decimal(q) == 0:
                    books[sym][side].pop(Decimal(p), None)
                else:
                    books[sym][side][Decimal(p)] = Decimal(q)
        want_b = sorted(books[sym]["bid"].items(), reverse=True)[:10]
        want_a = sorted(books[sym]["ask"].items())[:10]
        got = reader.book_at("binanceusdm", sym[:-4] + "-USDT", ts, depth=10)
        assert got.exact_depth == 10, (sym, ts)
        assert [(p, q) for p, q in got.bids] == want_b, (sym, ts)
        assert [(p, q) for p, q in got.asks] == want_a, (sym, ts)
        compared += 1
        bt = [t for t in ticker.get(sym, []) if snap["lastUpdateId"] <= t["u"] <= ev["u"]]
        if bt:
            t = bt[-1]
            assert (got.bids[0][0], got.bids[0][1]) == (Decimal(t["b"]), Decimal(t["B"]))
            assert (got.asks[0][0], got.asks[0][1]) == (Decimal(t["a"]), Decimal(t["A"]))
            tops += 1
    assert compared == 752  # 764 depth events - 12 dropped before the REST snapshots
    assert tops >= 700


def _kraken_f(x: Decimal, text_decimals: int) -> str:
    return f"{x:.{text_decimals}f}".replace(".", "").lstrip("0")


def test_book_at_each_kraken_checksum_message_reproduces_checksum(
    lake: Config, captures: Path
) -> None:
    reader = Reader(lake)
    checked = 0
    for rec in merge_captures([captures / "KRAKEN" / "KRAKEN.ws.50.0"]):
        if rec.kind != "recv":
            continue
        msg = orjson.loads(rec.payload)
        if not isinstance(msg, list) or "c" not in msg[-3]:
            continue
        pair = msg[-1]
        base, quote = pair.split("/")
        symbol = f"{'BTC' if base == 'XBT' else base}-{'BTC' if quote == 'XBT' else quote}"
        sample = (msg[1].get("a") or msg[1].get("b"))[0]
        px_dec = len(sample[0].split(".")[1])
        sz_dec = len(sample[1].split(".")[1])
        book = reader.book_at("kraken", symbol, rec.ts, depth=10)
        text = "".join(_kraken_f(p, px_dec) + _kraken_f(s, sz_dec) for p, s in book.asks) + "".join(
            _kraken_f(p, px_dec) + _kraken_f(s, sz_dec) for p, s in book.bids
        )
        assert zlib.crc32(text.encode()) & 0xFFFFFFFF == int(msg[-3]["c"]), (pair, rec.ts)
        checked += 1
    assert checked == 2595


def test_book_at_before_any_snapshot_is_empty(lake: Config) -> None:
    book = Reader(lake).book_at("kraken", "XMR-USD", "2021-04-17T00:00:00Z", depth=5)
    assert book.bids == [] and book.asks == [] and book.snapshot_ts is None


def test_parse_time_accepts_iso_and_ns_and_rejects_garbage() -> None:
    assert parse_time("2021-04-17T16:48:52.123456789Z") == 1618678132123456789
    assert parse_time("1618678132123456789") == 1618678132123456789
    assert parse_time("2021-04-17T16:48:52") == 1618678132000000000
    with pytest.raises(QueryError, match="at="):
        parse_time("yesterday", "at")


def test_book_at_event_time_equals_the_book_after_the_last_update_of_that_event_time(
    lake: Config, captures: Path
) -> None:
    """``time="event"``: at the event time E of a depth update the book is the one after the
    last update (in receive order) with event time <= E: compared with the receive-time book at
    that update's arrival, and never includes an update from the venue's future."""
    reader = Reader(lake)
    by_sym: dict[str, list[tuple[int, int]]] = {}
    for ts, ev, snaps in _binance_events(captures):
        if (
            ev["e"] == "depthUpdate"
            and ev["s"] in snaps
            and ev["u"] >= snaps[ev["s"]][1]["lastUpdateId"]
        ):
            by_sym.setdefault(ev["s"], []).append((ev["E"] * 1_000_000, ts))
    compared = differs = 0
    for sym, updates in by_sym.items():
        symbol = sym[:-4] + "-USDT"
        for i, (event, _) in enumerate(updates[:: max(1, len(updates) // 25)]):
            # the last update, in receive order, whose event time is <= event
            last_recv = max(r for e, r in updates if e <= event)
            got = reader.book_at("binanceusdm", symbol, event, depth=10, time="event")
            want = reader.book_at("binanceusdm", symbol, last_recv, depth=10)
            assert got.ts == event and (got.bids, got.asks) == (want.bids, want.asks), (sym, i)
            assert got.exact_depth == 10
            compared += 1
            # read as a receive time, the same instant is earlier in the stream (latency)
            as_recv = reader.book_at("binanceusdm", symbol, event, depth=10)
            differs += (as_recv.bids, as_recv.asks) != (got.bids, got.asks)
    assert compared >= 100 and differs > 0


def test_book_at_rejects_an_unknown_time_kind(lake: Config) -> None:
    with pytest.raises(QueryError, match="time='exchange'"):
        Reader(lake).book_at("binanceusdm", "SUSHI-USDT", 0, time="exchange")  # type: ignore[arg-type]
