"""fluxforge.quality: the evaluations behind the Dagster asset checks, on small Arrow tables."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa

from fluxforge import quality
from fluxforge.tables import DECIMAL

H = quality.HOUR_NS


def _quotes(rows: list[tuple[int, str, str]]) -> pa.Table:
    return pa.table(
        {
            "exchange": ["x"] * len(rows),
            "symbol": ["BTC-USD"] * len(rows),
            "venue_symbol": ["BTC-USD"] * len(rows),
            "ts_recv": [r[0] for r in rows],
            "bid_px": pa.array([Decimal(r[1]) for r in rows], DECIMAL),
            "ask_px": pa.array([Decimal(r[2]) for r in rows], DECIMAL),
        }
    )


def _trades(rows: list[tuple[int, str, str]]) -> pa.Table:
    return pa.table(
        {
            "exchange": ["x"] * len(rows),
            "symbol": ["BTC-USD"] * len(rows),
            "venue_symbol": ["BTC-USD"] * len(rows),
            "ts_recv": [r[0] for r in rows],
            "trade_id": [r[1] for r in rows],
            "price": pa.array([Decimal(r[2]) for r in rows], DECIMAL),
        }
    )


def test_crossed_books_crossed_quote_counted():
    ok = quality.crossed_books(None, _quotes([(1, "99", "100"), (2, "100", "101")]))
    bad = quality.crossed_books(None, _quotes([(1, "99", "100"), (2, "101", "100")]))
    assert ok.passed and ok.count == 0
    assert not bad.passed and bad.count == 1 and "101" in bad.examples[0]


def test_crossed_books_snapshot_top_levels_compared():
    snaps = pa.table(
        {
            "venue_symbol": ["A", "A", "A"],
            "ts_event": [1, 2, 3],
            "bid_px": pa.array([[Decimal(10)], [Decimal(12)], []], pa.list_(DECIMAL)),
            "ask_px": pa.array([[Decimal(11)], [Decimal(11)], [Decimal(1)]], pa.list_(DECIMAL)),
        }
    )
    found = quality.crossed_books(snaps, None)
    assert found.count == 1  # the one-sided third snapshot is not a crossed book


def test_duplicate_trade_ids_empty_ids_ignored():
    t = _trades([(1, "a", "1"), (2, "a", "1"), (3, "", "1"), (4, "", "1"), (5, "b", "1")])
    found = quality.duplicate_trade_ids(t)
    assert not found.passed and found.count == 1


def test_trades_outside_book_beyond_tolerance_flagged():
    quotes = _quotes([(10, "100", "101")])
    trades = _trades([(20, "1", "100.5"), (30, "2", "130"), (5, "3", "500")])
    found = quality.trades_outside_book(trades, quotes, tolerance=0.05)
    # the trade before any quote has nothing to compare with
    assert found.count == 1 and "130" in found.examples[0]


def test_stale_books_long_silence_flagged():
    deltas = pa.table(
        {
            "exchange": ["x"] * 3,
            "symbol": ["S"] * 3,
            "venue_symbol": ["S"] * 3,
            "ts_recv": [0, 1_000_000_000, 301_000_000_000],
        }
    )
    assert not quality.stale_books(deltas, max_silence_s=120).passed
    assert quality.stale_books(deltas, max_silence_s=600).passed


def test_reconcile_lines_equal_data_quarantined_control():
    assert quality.reconcile({"lines": 10, "data": 7, "quarantined": 2, "control": 1}).passed
    off = quality.reconcile({"lines": 10, "data": 7, "quarantined": 1, "control": 1})
    assert not off.passed and off.count == 1


def test_coverage_rows_per_hour_and_gaps():
    trades = pa.table(
        {"exchange": ["x"] * 3, "symbol": ["S"] * 3, "ts_recv": [1, 2, H + 5]}
    )  # fmt: skip
    gaps = pa.table({"exchange": ["x"], "symbol": ["S"], "ts_to": [H + 1]})
    deltas = pa.table({"exchange": ["x"], "symbol": ["S"], "ts_recv": [H + 2]})
    cov = quality.coverage({"trades": trades, "book_deltas": deltas}, gaps).to_pylist()
    by = {(r["channel"], r["hour"].timestamp()): r for r in cov}
    assert by[("trades", 0)]["rows"] == 2 and by[("trades", 3600)]["rows"] == 1
    assert by[("book", 3600)]["gaps"] == 1 and by[("trades", 0)]["gaps"] == 0


def test_book_drift_on_a_verified_book_fails_and_elsewhere_only_warns() -> None:
    from fluxforge.tables import BOOK_DRIFT

    def rows(integrity: str) -> pa.Table:
        row = {
            "ts_event": 1, "ts_recv": 2, "venue_symbol": "X", "book_epoch": 1, "update_id": -1,
            "seq": 3, "from_rest": False, "integrity": integrity, "levels_compared": 10,
            "levels_differing": 1, "max_size_diff": Decimal("0.5"),
        }  # fmt: skip
        return pa.Table.from_pylist([row], schema=BOOK_DRIFT)

    finding, verified = quality.book_drift(None)
    assert finding.passed and not verified
    finding, verified = quality.book_drift(rows("none"))
    assert not finding.passed and finding.count == 1 and not verified
    finding, verified = quality.book_drift(pa.concat_tables([rows("none"), rows("checksum")]))
    assert not finding.passed and finding.count == 2 and verified
    assert "checksum" in finding.examples[0]
