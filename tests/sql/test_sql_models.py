"""The dbt project on a small hand-made Delta lake: bars, book stats, coverage, data tests,
selection, refresh by date (a full refresh gives what the incremental path gave), the CLI."""

from __future__ import annotations

import shutil
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from delta_fixture import append
from sql_lake import DAY1, DAY2, DUPLICATES, NS, TRADES, build_lake

from fluxforge import sql_models
from fluxforge.config import Config, config_from_dict
from fluxforge.storage import Layout

MARTS = ("bars_1m", "bars_5m", "bars_1h", "bars_1d", "book_stats_1h", "coverage_hourly")


def delta_lake(root: Path) -> Config:
    cfg = build_lake(root)
    return cfg


def processed(cfg: Config) -> Path:
    layer = cfg.storage.etl_output
    return Path(layer.base_dir) / Layout.of(layer).names.processed_dir


def read_model(cfg: Config, model: str) -> list[dict]:
    """Rows of a mart as published (Parquet under {processed_dir}/models), read with plain
    DuckDB, independently of dbt."""
    layer = cfg.storage.etl_output
    root = Path(layer.base_dir) / Layout.of(layer).model_dir(model)
    files = sorted(str(p) for p in root.rglob("*.parquet"))
    if not files:
        return []
    rel = duckdb.sql(
        "select * from read_parquet($f, hive_partitioning=true, "
        "hive_types={'exchange': 'VARCHAR', 'symbol': 'VARCHAR', 'date': 'DATE'})",
        params={"f": files},
    )
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def published(cfg: Config) -> dict[str, list[tuple]]:
    """Every mart's published rows, sorted (for comparing two builds)."""
    out = {}
    for model in (*MARTS, "coverage_daily"):
        rows = read_model(cfg, model)
        out[model] = sorted(tuple(str(v) for v in r.values()) for r in rows)
    return out


def expected_bars(width_s: int) -> dict[tuple[str, str, int], dict]:
    """OHLCV / vwap / count per (exchange, symbol, bucket start ns), computed in Python."""
    seen: set[tuple[str, str, str]] = set()
    trades = []
    for t in sorted(TRADES, key=lambda t: (t.ts, t.seq)):
        key = (t.exchange, t.symbol, t.trade_id)
        if key in seen:
            continue
        seen.add(key)
        trades.append(t)
    buckets: dict[tuple[str, str, int], list] = defaultdict(list)
    for t in trades:
        start = t.ts - t.ts % (width_s * NS)
        buckets[(t.exchange, t.symbol, start)].append(t)
    out = {}
    for key, ts in buckets.items():
        prices = [Decimal(t.price) for t in ts]
        sizes = [Decimal(t.size) for t in ts]
        volume = sum(sizes, Decimal(0))
        out[key] = {
            "open": prices[0],
            "high": max(prices),
            "low": min(prices),
            "close": prices[-1],
            "volume": volume,
            "trade_count": len(ts),
            "vwap": float(sum((p * s for p, s in zip(prices, sizes, strict=True)), Decimal(0)))
            / float(volume),
        }
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, sql_models.SqlResult]:
    cfg = delta_lake(tmp_path_factory.mktemp("built") / "lake")
    result = sql_models.build(cfg)
    assert result.ok, result.to_dict()
    return cfg, result


def test_build_every_model_and_data_test_passes(built) -> None:
    _, result = built
    models = {n.name for n in result.nodes if n.kind == "model"}
    assert {"stg_trades", "stg_book_snapshots", "stg_book_deltas", "stg_gap_ledger"} <= models
    assert {*MARTS, "coverage_daily"} <= models
    tests = {n.name: n for n in result.nodes if n.kind == "test"}
    assert {n.status for n in tests.values()} == {"pass"}
    assert "not_null_bars_1m_open" in tests
    assert "assert_bars_rollups_match_trades" in tests
    assert any(name.startswith("accepted_range_") for name in tests)
    assert any(name.startswith("unique_combination_of_columns_") for name in tests)


def test_build_bars_1m_hand_computed_values_match(built) -> None:
    cfg, _ = built
    rows = {(r["exchange"], r["symbol"], r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    first = rows[("coinbase", "BTC-USD", DAY1)]
    # minute 0: 100.5 x 1, 101.25 x 2 (its duplicate ignored), 99.75 x 0.5
    assert first["open"] == Decimal("100.5")
    assert first["high"] == Decimal("101.25")
    assert first["low"] == Decimal("99.75")
    assert first["close"] == Decimal("99.75")
    assert first["volume"] == Decimal("3.5")
    assert first["trade_count"] == 3
    assert first["vwap"] == pytest.approx(352.875 / 3.5, rel=1e-12)
    assert str(first["date"]) == "2024-01-01"
    assert first["interval"] == "1m"
    # 12-decimal prices (the lake's scale) survive exactly
    fifth = rows[("coinbase", "BTC-USD", DAY1 + 240 * NS)]
    assert fifth["high"] == Decimal("100.000000000001")
    assert sum(r["trade_count"] for r in rows.values()) == len(TRADES) - DUPLICATES


@pytest.mark.parametrize(
    ("model", "width_s"), [("bars_1m", 60), ("bars_5m", 300), ("bars_1h", 3600), ("bars_1d", 86400)]
)
def test_build_bars_every_interval_matches_python_rollup(built, model: str, width_s: int) -> None:
    cfg, _ = built
    got = {(r["exchange"], r["symbol"], r["bar_start_ns"]): r for r in read_model(cfg, model)}
    want = expected_bars(width_s)
    assert set(got) == set(want)
    for key, exp in want.items():
        row = got[key]
        for col in ("open", "high", "low", "close", "volume", "trade_count"):
            assert row[col] == exp[col], (model, key, col)
        assert row["vwap"] == pytest.approx(exp["vwap"], rel=1e-12)
        assert row["bar_end_ns"] - row["bar_start_ns"] == width_s * NS


def test_build_book_stats_spread_and_depth_match_snapshots(built) -> None:
    cfg, _ = built
    rows = {r["hour_start_ns"]: r for r in read_model(cfg, "book_stats_1h")}
    hour0 = rows[DAY1]
    # snapshots 99/101 (mid 100, 200 bps) and 100/100.5 (mid 100.25, 0.5 / 100.25 * 1e4 bps)
    assert hour0["snapshot_count"] == 2
    assert hour0["spread_bps_max"] == pytest.approx(200.0)
    assert hour0["spread_bps_min"] == pytest.approx(0.5 / 100.25 * 1e4)
    assert hour0["mid_avg"] == pytest.approx((100 + 100.25) / 2)
    assert hour0["bid_depth_10_avg"] == pytest.approx((3 + 1) / 2)
    assert hour0["ask_depth_10_avg"] == pytest.approx((1.5 + 5) / 2)
    assert rows[DAY1 + 3600 * NS]["snapshot_count"] == 1


def test_build_coverage_reports_presence_and_gaps_per_day(built) -> None:
    cfg, _ = built
    daily = {
        (r["exchange"], r["symbol"], str(r["date"])): r for r in read_model(cfg, "coverage_daily")
    }
    day = daily[("coinbase", "BTC-USD", "2024-01-01")]
    assert day["trade_count"] == 6
    assert day["hours_with_trades"] == 2
    assert day["hours_with_book"] == 2
    assert day["book_update_count"] == 3
    assert day["book_snapshot_count"] == 3
    assert day["gap_count"] == 1
    assert day["chain_break_count"] == 1
    assert day["gap_seconds"] == pytest.approx(2.0)
    assert daily[("coinbase", "BTC-USD", "2024-01-02")]["hours_with_book"] == 0
    hourly = [r for r in read_model(cfg, "coverage_hourly") if r["symbol"] == "BTC-USD"]
    assert len(hourly) == 48
    hour1 = next(r for r in hourly if str(r["date"]) == "2024-01-01" and r["hour"] == 1)
    assert hour1["has_trades"] and hour1["has_book"] and hour1["gap_count"] == 1


def test_run_select_one_model_rebuilds_only_it(built) -> None:
    cfg, _ = built
    result = sql_models.run(cfg, select=["bars_1h"])
    assert result.ok and [n.name for n in result.nodes] == ["bars_1h"]
    assert len(read_model(cfg, "bars_1h")) == len(expected_bars(3600))


def test_build_bad_side_and_crossed_book_fail_their_tests(tmp_path: Path) -> None:
    cfg = delta_lake(tmp_path / "lake")
    part = {"exchange": "coinbase", "symbol": "BTC-USD", "date": "2024-01-01"}
    bad_trade = {
        "ts_event": DAY1 + NS,
        "ts_recv": DAY1 + NS,
        "venue_symbol": "x",
        "trade_id": "zz",
        "price": Decimal(1),
        "size": Decimal(1),
        "side": "o'BUY",
        "seq": 99,
    }
    append(processed(cfg), "trades", [bad_trade], part)
    crossed = {
        "ts_event": DAY1 + 7 * NS,
        "ts_recv": DAY1 + 7 * NS,
        "venue_symbol": "x",
        "depth": 50,
        "bid_px": [Decimal(101)],
        "bid_sz": [Decimal(1)],
        "ask_px": [Decimal(100)],
        "ask_sz": [Decimal(1)],
        "reason": "weird",
        "book_epoch": 1,
        "update_id": -1,
    }
    append(processed(cfg), "book_snapshots", [crossed], part)
    result = sql_models.build(cfg)
    assert not result.ok
    assert result.node("accepted_values_stg_trades_side__buy__sell__unknown").failures == 1
    reason = next(n for n in result.nodes if n.name.startswith("accepted_values_stg_book_snap"))
    assert reason.status == "fail" and reason.failures == 1
    assert result.node("assert_book_snapshots_not_crossed").status == "fail"
    # a view's failing test skips the marts built on it (dbt build), not the unrelated ones
    assert result.node("book_stats_1h").status == "skipped"
    assert result.node("bars_1m").status == "skipped"


def test_run_dates_refresh_only_those_dates_and_equal_a_full_refresh(tmp_path: Path) -> None:
    cfg = delta_lake(tmp_path / "lake")
    assert sql_models.run(cfg).ok
    before = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    late = DAY2 - NS // 10  # event 23:59:59.9 on day 1, received (and filed) on day 2
    row = {
        "ts_event": late,
        "ts_recv": DAY2 + NS,
        "venue_symbol": "x",
        "trade_id": "late",
        "price": Decimal("105"),
        "size": Decimal("2"),
        "side": "buy",
        "seq": 50,
    }
    append(
        processed(cfg),
        "trades",
        [row],
        {"exchange": "coinbase", "symbol": "BTC-USD", "date": "2024-01-02"},
    )
    # a run of day 2 reads day 1's neighbour partition but rewrites only day 2
    assert sql_models.run(cfg, dates=["2024-01-02"]).ok
    after = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    assert after == before
    # the new segment touched day 1's bars: refreshing day 1 picks the late trade up
    assert sql_models.run(cfg, dates=["2024-01-01"]).ok
    after = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    bar = after[("2024-01-01", DAY2 - 60 * NS)]
    assert (bar["open"], bar["volume"], bar["trade_count"]) == (Decimal(105), Decimal(2), 1)
    assert after[("2024-01-02", DAY2)] == before[("2024-01-02", DAY2)]
    day = {r["bar_start_ns"]: r for r in read_model(cfg, "bars_1d")}[DAY1]
    assert day["trade_count"] == 6 + 1
    incremental = published(cfg)

    full = tmp_path / "full"
    shutil.copytree(tmp_path / "lake", full)
    shutil.rmtree(full / "processed" / "models")
    shutil.rmtree(full / "state")
    full_cfg = config_from_dict(
        {"storage": {"backend": "local", "base_dir": str(full)}}, environ={}
    )
    assert sql_models.run(full_cfg, full_refresh=True).ok
    assert published(full_cfg) == incremental
    assert all(incremental[m] for m in MARTS)


def test_run_bad_date_is_refused_before_dbt_runs(tmp_path: Path) -> None:
    cfg = config_from_dict({"storage": {"base_dir": str(tmp_path)}}, environ={})
    with pytest.raises(sql_models.SqlModelsError, match="2024-13-01"):
        sql_models.run(cfg, dates=["2024-13-01"])


def test_build_empty_lake_builds_empty_models_and_tests_pass(tmp_path: Path) -> None:
    cfg = config_from_dict({"storage": {"base_dir": str(tmp_path / "empty")}}, environ={})
    result = sql_models.build(cfg)
    assert result.ok, result.to_dict()
    assert read_model(cfg, "bars_1d") == []


def test_sql_cli_run_json_and_exit_codes(built, tmp_path: Path) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from fluxforge.cli import main

    cfg, _ = built
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"storage": {"base_dir": cfg.storage.etl_output.base_dir}}))
    runner = CliRunner()
    done = runner.invoke(main, ["sql", "test", "--config", str(conf), "-s", "bars_1d", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["ok"] and out["counts"]["pass"] >= 5
    assert {n["kind"] for n in out["nodes"]} == {"test"}
    done = runner.invoke(main, ["sql", "run", "--config", str(conf), "-s", "nope"])
    assert done.exit_code == 2 and "nope" in done.stderr
    done = runner.invoke(main, ["sql", "profile", "--config", str(conf)])
    assert done.exit_code == 0
    assert (Path(done.stdout.strip()) / "profiles.yml").is_file()
