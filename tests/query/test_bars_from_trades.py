"""The reader's bar computation from trades (used to complete a trailing hot day) against a
plain Decimal computation of the bar rule (fluxforge/bar_rule.py)."""

from __future__ import annotations

import random
from decimal import Decimal

import pyarrow as pa

from fluxforge.query import BARS, bars_from_trades
from fluxforge.tables import DECIMAL

MIN = 60 * 10**9


def _trades(n: int, rng: random.Random) -> pa.Table:
    """Trades in receive order; several share a raw line (seq) and event times collide."""
    rows = []
    seq = 100
    while len(rows) < n:
        seq += 1
        ts_recv = seq * 10**8
        for _ in range(rng.choice((1, 1, 2, 3))):
            rows.append(
                {
                    # whole seconds over 4 minutes: ties on ts_event within and across lines
                    "ts_event": 7 * MIN + rng.randrange(240) * 10**9,
                    "ts_recv": ts_recv,
                    "seq": seq,
                    "price": Decimal(rng.randrange(10**6, 2 * 10**6)) / 100,
                    "size": Decimal(rng.randrange(1, 10**8)) / 10**8,
                    # venue ids of several lengths ("99" < "100"), some trades without one
                    "trade_id": rng.choice((None, "", str(len(rows) * 7 + 5))),
                }
            )
    return pa.Table.from_pylist(
        rows,
        pa.schema(
            [
                ("ts_event", pa.int64()),
                ("ts_recv", pa.int64()),
                ("seq", pa.int64()),
                ("price", DECIMAL),
                ("size", DECIMAL),
                ("trade_id", pa.string()),
            ]
        ),
    )


def _expected(rows: list[dict], iv: int) -> list[dict]:
    buckets: dict[int, list[tuple[int, dict]]] = {}
    for r in rows:
        buckets.setdefault(r["ts_event"] - r["ts_event"] % iv, []).append(r)
    out = []
    for start in sorted(buckets):
        group = sorted(
            buckets[start],
            key=lambda r: (
                r["ts_event"],
                r["ts_recv"],
                r["seq"],
                len(r["trade_id"] or ""),
                (r["trade_id"] or "").encode(),
                r["price"],
            ),
        )
        prices = [r["price"] for r in group]
        volume = sum((r["size"] for r in group), Decimal(0))
        notional = sum((r["price"] * r["size"] for r in group), Decimal(0))
        out.append(
            {
                "ts": start,
                "open": prices[0],
                "high": max(prices),
                "low": min(prices),
                "close": prices[-1],
                "volume": volume,
                "vwap": float(notional / volume),
                "trade_count": len(group),
            }
        )
    return out


def test_bars_from_trades_with_tied_event_times_match_decimal_computation() -> None:
    trades = _trades(400, random.Random(7))
    for iv in (MIN, 5 * MIN):
        got = bars_from_trades(trades, iv)
        assert got.schema == BARS
        want = _expected(trades.to_pylist(), iv)
        assert len(want) == got.num_rows >= 1
        for g, w in zip(got.to_pylist(), want, strict=True):
            assert abs(g.pop("vwap") - w.pop("vwap")) <= 1e-9 * float(w["high"])
            assert g == w


def test_bars_from_trades_of_no_trade_are_empty() -> None:
    assert bars_from_trades(_trades(1, random.Random(1)).slice(0, 0), MIN).equals(
        BARS.empty_table()
    )
