"""Test-local extraction of BookMessages from the real captures (a stand-in for the venue
normalizers, kept minimal: only the book channels the book tests need)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

import orjson

from fluxforge.captures import merge_captures
from fluxforge.events import (
    CHAIN_BINANCE_FUTURES,
    CHECKSUM_KRAKEN,
    CHECKSUM_OKX,
    BookMessage,
    TopOfBook,
)

Books = dict[str, list[BookMessage]]


def _msg(ex: str, vs: str, ts_event: int, rec, snap: bool, bids, asks, **kw) -> BookMessage:
    sym = vs.replace("/", "-").replace("XBT", "BTC")
    return BookMessage(
        ex,
        sym,
        vs,
        "book",
        ts_event,
        rec.ts,
        rec.line_no,
        snap,
        [(p, s) for p, s, *_ in bids],
        [(p, s) for p, s, *_ in asks],
        **kw,
    )


def kraken(captures: Path) -> Books:
    out: Books = defaultdict(list)
    for rec in merge_captures([captures / "KRAKEN" / "KRAKEN.ws.50.0"]):
        if rec.kind != "recv":
            continue
        d = orjson.loads(rec.payload)
        if not isinstance(d, list):
            continue
        pair, parts = d[-1], d[1:-2]
        depth = int(d[-2].split("-")[1])
        if "as" in parts[0] or "bs" in parts[0]:
            m = _msg(
                "kraken",
                pair,
                rec.ts,
                rec,
                True,
                parts[0].get("bs", []),
                parts[0].get("as", []),
                depth=depth,
            )
        else:
            bids = [lv for p in parts for lv in p.get("b", [])]
            asks = [lv for p in parts for lv in p.get("a", [])]
            m = _msg(
                "kraken",
                pair,
                rec.ts,
                rec,
                False,
                bids,
                asks,
                depth=depth,
                checksum=int(parts[-1]["c"]),
                checksum_kind=CHECKSUM_KRAKEN,
            )
        out[m.symbol].append(m)
    return out


def okx_like(captures: Path, ex: str, folder: str, file: str) -> Books:
    out: Books = defaultdict(list)
    for rec in merge_captures([captures / folder / file]):
        if rec.kind != "recv":
            continue
        d = orjson.loads(rec.payload)
        if not isinstance(d, dict) or d.get("arg", {}).get("channel") != "books" or "data" not in d:
            continue
        data = d["data"][0]
        m = _msg(
            ex,
            d["arg"]["instId"],
            int(data["ts"]) * 1_000_000,
            rec,
            d["action"] == "snapshot",
            data["bids"],
            data["asks"],
            checksum=int(data["checksum"]),
            checksum_kind=CHECKSUM_OKX,
        )
        out[m.symbol].append(m)
    return out


def binance_futures(captures: Path) -> tuple[Books, dict[str, list[TopOfBook]]]:
    out: Books = defaultdict(list)
    tops: dict[str, list[TopOfBook]] = defaultdict(list)
    for rec in merge_captures(sorted((captures / "BINANCE_FUTURES").glob("*.*.*"))):
        if rec.kind == "rest" and "/depth" in (rec.url or ""):
            vs = rec.url.split("symbol=")[1].split("&")[0]
            d = orjson.loads(rec.payload)
            out[vs].append(
                _msg(
                    "binanceusdm",
                    vs,
                    d["E"] * 1_000_000,
                    rec,
                    True,
                    d["bids"],
                    d["asks"],
                    final_id=d["lastUpdateId"],
                    from_rest=True,
                    chain=CHAIN_BINANCE_FUTURES,
                )
            )
        elif rec.kind == "recv":
            d = orjson.loads(rec.payload).get("data", {})
            if d.get("e") == "depthUpdate":
                out[d["s"]].append(
                    _msg(
                        "binanceusdm",
                        d["s"],
                        d["E"] * 1_000_000,
                        rec,
                        False,
                        d["b"],
                        d["a"],
                        first_id=d["U"],
                        final_id=d["u"],
                        prev_id=d["pu"],
                        chain=CHAIN_BINANCE_FUTURES,
                    )
                )
            elif d.get("e") == "bookTicker":
                tops[d["s"]].append(
                    TopOfBook("binanceusdm", d["s"], d["u"], d["b"], d["B"], d["a"], d["A"], rec.ts)
                )
    return out, tops


def coinbase(captures: Path) -> Books:
    out: Books = defaultdict(list)
    for rec in merge_captures([captures / "COINBASE" / "COINBASE.ws.28.0"]):
        if rec.kind != "recv":
            continue
        d = orjson.loads(rec.payload)
        t = d.get("type")
        if t == "snapshot":
            m = _msg("coinbase", d["product_id"], rec.ts, rec, True, d["bids"], d["asks"])
        elif t == "l2update":
            ts = int(datetime.fromisoformat(d["time"].replace("Z", "+00:00")).timestamp() * 1e6)
            ch = d["changes"]
            m = _msg(
                "coinbase",
                d["product_id"],
                ts * 1000,
                rec,
                False,
                [(p, s) for side, p, s in ch if side == "buy"],
                [(p, s) for side, p, s in ch if side == "sell"],
            )
        else:
            continue
        out[m.symbol].append(m)
    return out
