"""The SQL project on a small hand-made lake: bars, book stats, coverage, tests, selection."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from sql_lake import DAY1, DAY2, DUPLICATES, NS, TRADES, build_lake

from fluxforge import lake as lakemod
from fluxforge import sqlmodels
from fluxforge.config import Config
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import SCHEMAS


def read_model(cfg: Config, model: str) -> list[dict]:
    """Rows of a built model, read independently of the runner (plain DuckDB over the files)."""
    root = Path(cfg.storage.etl_output.base_dir) / Layout.of(cfg.storage.etl_output).model_dir(
        model
    )
    files = sorted(str(p) for p in root.rglob("*.parquet"))
    if files == [str(root / "data.parquet")]:
        rel = duckdb.sql("select * from read_parquet($f)", params={"f": files})
    else:
        rel = duckdb.sql(
            "select * from read_parquet($f, hive_partitioning=true, "
            "hive_types={'exchange': 'VARCHAR', 'symbol': 'VARCHAR', 'date': 'DATE'})",
            params={"f": files},
        )
    cols = rel.columns
    return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


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
def built(tmp_path_factory: pytest.TempPathFactory) -> Config:
    cfg = build_lake(tmp_path_factory.mktemp("built") / "lake")
    result = sqlmodels.run(cfg)
    assert result.ok, result.to_dict()
    return cfg


def test_load_project_real_project_orders_dependencies_first() -> None:
    project = sqlmodels.load_project()
    order = project.order
    assert project.models["bars_5m"].deps == ("bars_1m",)
    assert project.models["bars_1m"].deps == ("stg_trades",)
    assert project.models["stg_trades"].sources == (("lake", "trades"),)
    for model in project.models.values():
        for dep in model.deps:
            assert order.index(dep) < order.index(model.name)
    assert {"stg_trades", "stg_book_snapshots", "stg_gap_ledger", "bars_1m", "bars_5m"} <= set(
        order
    )
    assert {"bars_1h", "bars_1d", "book_stats_1h", "coverage_daily", "coverage_hourly"} <= set(
        order
    )
    assert project.models["stg_trades"].materialized == "view"
    assert (project.models["stg_trades"].group, project.models["bars_1d"].group) == (
        "staging",
        "marts",
    )
    assert project.models["bars_1m"].partition_by == ("exchange", "symbol", "date")
    names = [t.name for t in project.tests_for("bars_1m")]
    assert "not_null_bars_1m_open" in names


def _project(tmp_path: Path, models: dict[str, str], tests: dict[str, str] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "project.yml").write_text("name: t\nmodels:\n  +materialized: table\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: lake\n    tables: [trades]\n"
    )
    for name, sql in models.items():
        (tmp_path / "models" / f"{name}.sql").write_text(sql)
    (tmp_path / "tests").mkdir()
    for name, sql in (tests or {}).items():
        (tmp_path / "tests" / f"{name}.sql").write_text(sql)
    return tmp_path


def test_load_project_cycle_raises_error_naming_the_cycle(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "a": "select * from {{ ref('c') }}",
            "b": "select * from {{ ref('a') }}",
            "c": "select * from {{ ref('b') }}",
            "d": "select 1 as x",
        },
    )
    with pytest.raises(sqlmodels.CycleError) as err:
        sqlmodels.load_project(root)
    assert err.value.cycle == ["a", "c", "b", "a"]
    assert "a -> c -> b -> a" in str(err.value)


def test_load_project_unknown_ref_raises_error_naming_file(tmp_path: Path) -> None:
    root = _project(tmp_path, {"a": "select * from {{ ref('nope') }}"})
    with pytest.raises(sqlmodels.ProjectError, match=r"models/a\.sql: ref\('nope'\)"):
        sqlmodels.load_project(root)


def test_load_project_unsupported_jinja_raises_error_with_line(tmp_path: Path) -> None:
    root = _project(tmp_path, {"a": "select 1\n{% if x %}\nselect 2"})
    with pytest.raises(sqlmodels.ProjectError, match=r"models/a\.sql:2"):
        sqlmodels.load_project(root)


def test_load_project_undeclared_source_raises_error(tmp_path: Path) -> None:
    root = _project(tmp_path, {"a": "select * from {{ source('lake', 'nope') }}"})
    with pytest.raises(sqlmodels.ProjectError, match=r"source\('lake', 'nope'\)"):
        sqlmodels.load_project(root)


def test_run_bars_1m_hand_computed_values_match(built: Config) -> None:
    rows = {
        (r["exchange"], r["symbol"], r["bar_start_ns"]): r for r in read_model(built, "bars_1m")
    }
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
    # 18-decimal prices survive exactly
    fifth = rows[("coinbase", "BTC-USD", DAY1 + 240 * NS)]
    assert fifth["high"] == Decimal("100.000000000000000001")
    assert sum(r["trade_count"] for r in rows.values()) == len(TRADES) - DUPLICATES


@pytest.mark.parametrize(
    ("model", "width_s"), [("bars_1m", 60), ("bars_5m", 300), ("bars_1h", 3600), ("bars_1d", 86400)]
)
def test_run_bars_every_interval_matches_python_rollup(built: Config, model: str, width_s: int):
    got = {(r["exchange"], r["symbol"], r["bar_start_ns"]): r for r in read_model(built, model)}
    want = expected_bars(width_s)
    assert set(got) == set(want)
    for key, exp in want.items():
        row = got[key]
        for col in ("open", "high", "low", "close", "volume", "trade_count"):
            assert row[col] == exp[col], (model, key, col)
        assert row["vwap"] == pytest.approx(exp["vwap"], rel=1e-12)
        assert row["bar_end_ns"] - row["bar_start_ns"] == width_s * NS


def test_run_book_stats_spread_and_depth_match_snapshots(built: Config) -> None:
    rows = {r["hour_start_ns"]: r for r in read_model(built, "book_stats_1h")}
    hour0 = rows[DAY1]
    # snapshots 99/101 (mid 100, 200 bps) and 100/100.5 (mid 100.25, 0.5 / 100.25 * 1e4 bps)
    assert hour0["snapshot_count"] == 2
    assert hour0["spread_bps_max"] == pytest.approx(200.0)
    assert hour0["spread_bps_min"] == pytest.approx(0.5 / 100.25 * 1e4)
    assert hour0["mid_avg"] == pytest.approx((100 + 100.25) / 2)
    assert hour0["bid_depth_10_avg"] == pytest.approx((3 + 1) / 2)
    assert hour0["ask_depth_10_avg"] == pytest.approx((1.5 + 5) / 2)
    assert rows[DAY1 + 3600 * NS]["snapshot_count"] == 1


def test_run_coverage_reports_presence_and_gaps_per_day(built: Config) -> None:
    daily = {
        (r["exchange"], r["symbol"], str(r["date"])): r for r in read_model(built, "coverage_daily")
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
    hourly = [r for r in read_model(built, "coverage_hourly") if r["symbol"] == "BTC-USD"]
    assert len(hourly) == 48
    hour1 = next(r for r in hourly if str(r["date"]) == "2024-01-01" and r["hour"] == 1)
    assert hour1["has_trades"] and hour1["has_book"] and hour1["gap_count"] == 1


def test_test_clean_lake_every_test_passes(built: Config) -> None:
    result = sqlmodels.test(built)
    bad = [(t.name, t.status, t.failures, t.error) for t in result.tests if t.status != "pass"]
    assert bad == []
    assert result.ok
    kinds = {t.kind for t in result.tests}
    assert kinds == {
        "not_null",
        "accepted_values",
        "accepted_range",
        "unique_combination_of_columns",
        "singular",
    }


def _add_rows(cfg: Config, table: str, rows: list[dict], part: str) -> None:
    storage = LocalStorage(cfg.storage.etl_output.base_dir)
    data = pa.Table.from_pylist(rows, schema=SCHEMAS[table])
    layout = Layout.of(cfg.storage.etl_output)
    lakemod.write_part(
        storage, layout, table, "coinbase", "BTC-USD", "2024-01-01", part, data, 1000
    )


def test_test_bad_side_and_crossed_book_fail_their_tests(tmp_path: Path) -> None:
    cfg = build_lake(tmp_path / "lake")
    _add_rows(
        cfg,
        "trades",
        [
            {
                "ts_event": DAY1 + NS,
                "ts_recv": DAY1 + NS,
                "venue_symbol": "x",
                "trade_id": "zz",
                "price": Decimal(1),
                "size": Decimal(1),
                "side": "o'BUY",
                "seq": 99,
            }
        ],
        "bad",
    )
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
    _add_rows(cfg, "book_snapshots", [crossed], "bad")
    assert sqlmodels.run(cfg).ok
    result = sqlmodels.test(cfg)
    assert not result.ok
    assert result.test("accepted_values_stg_trades_side").failures == 1
    assert result.test("accepted_values_stg_book_snapshots_reason").failures == 1
    assert result.test("assert_book_snapshots_not_crossed").status == "fail"
    assert result.test("accepted_range_book_stats_1h_spread_bps_min").status == "fail"
    assert result.test("not_null_bars_1m_open").status == "pass"


def test_run_select_one_model_reads_upstream_outputs(built: Config) -> None:
    result = sqlmodels.run(built, select=["bars_1h"])
    assert [m.name for m in result.models] == ["bars_1h"]
    assert result.ok and result.model("bars_1h").rows == len(expected_bars(3600))
    checks = sqlmodels.test(built, select="bars_1h")
    assert {t.model for t in checks.tests if t.kind != "singular"} == {"bars_1h"}
    assert checks.ok


def test_run_select_without_built_upstream_raises_clear_error(tmp_path: Path) -> None:
    cfg = build_lake(tmp_path / "lake")
    with pytest.raises(sqlmodels.ModelNotBuiltError, match="bars_1m"):
        sqlmodels.run(cfg, select=["bars_5m"])


def test_run_rerun_after_lake_shrinks_drops_stale_partitions(tmp_path: Path) -> None:
    cfg = build_lake(tmp_path / "lake")
    assert sqlmodels.run(cfg, select="+bars_1m").ok
    assert {str(r["date"]) for r in read_model(cfg, "bars_1m")} == {"2024-01-01", "2024-01-02"}
    storage = LocalStorage(cfg.storage.etl_output.base_dir)
    gone = lakemod.Lake(storage).files("trades", "coinbase", "BTC-USD", "2024-01-02")
    assert gone
    lakemod.Lake(storage).commit("trades", [], remove=gone)
    assert sqlmodels.run(cfg, select="+bars_1m").ok
    assert {str(r["date"]) for r in read_model(cfg, "bars_1m")} == {"2024-01-01"}


def test_run_empty_lake_builds_empty_models_and_tests_pass(tmp_path: Path) -> None:
    from fluxforge.config import config_from_dict

    cfg = config_from_dict({"storage": {"base_dir": str(tmp_path / "empty")}}, environ={})
    result = sqlmodels.run(cfg)
    assert result.ok
    assert result.model("bars_1m").rows == 0
    assert read_model(cfg, "bars_1d") == []
    assert sqlmodels.test(cfg).ok


def test_run_broken_model_skips_downstream_and_reports_file(tmp_path: Path) -> None:
    root = _project(
        tmp_path / "proj",
        {
            "a": "select * from {{ source('lake', 'trades') }} where no_such_column > 0",
            "b": "select * from {{ ref('a') }}",
            "c": "select count(*) as n from {{ source('lake', 'trades') }}",
        },
    )
    cfg = build_lake(tmp_path / "lake")
    result = sqlmodels.run(cfg, project=root)
    assert result.model("a").status == "error" and "models/a.sql" in result.model("a").error
    assert result.model("b").status == "skipped"
    assert result.model("c").status == "success" and result.model("c").rows == 1
    assert not result.ok


@pytest.mark.services
def test_run_s3_lake_builds_same_bars_as_local(s3_env, built: Config, tmp_path: Path) -> None:
    from fluxforge.config import config_from_dict
    from fluxforge.storage import open_storage

    bucket = s3_env.bucket("sqlmodels")
    local = Path(built.storage.etl_output.base_dir)
    client = s3_env.client()
    for path in (local / "processed").rglob("*"):  # data files and the Delta logs
        rel = path.relative_to(local).as_posix()
        if path.is_file() and "/models/" not in f"/{rel}":
            client.upload_file(str(path), bucket, rel)
    cfg = config_from_dict(
        {
            "storage": {
                "backend": "s3",
                "base_dir": bucket,
                "s3": {"endpoint_url": s3_env.endpoint_url, "region": s3_env.region},
            }
        },
        environ={},
    )
    result = sqlmodels.run(cfg)
    assert result.ok, result.to_dict()
    assert result.model("bars_1m").uri.startswith(f"s3://{bucket}/processed/models/bars_1m")
    assert sqlmodels.test(cfg).ok
    storage = open_storage(cfg.storage.etl_output)
    for key in storage.list("processed/models/bars_1m", "*.parquet", recursive=True):
        target = tmp_path / "dl" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(key, target)
    dl_cfg = config_from_dict({"storage": {"base_dir": str(tmp_path / "dl")}}, environ={})
    got = sorted((r["symbol"], r["bar_start_ns"], r["vwap"]) for r in read_model(dl_cfg, "bars_1m"))
    want = sorted((r["symbol"], r["bar_start_ns"], r["vwap"]) for r in read_model(built, "bars_1m"))
    assert got == want and len(got) == len(expected_bars(60))


def test_run_dated_rebuilds_only_those_days_and_reads_neighbour_days(tmp_path: Path) -> None:
    cfg = build_lake(tmp_path / "lake")
    assert sqlmodels.run(cfg).ok
    before = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    late = DAY2 - NS // 10  # event 23:59:59.9 on day 1, received (and filed) on day 2
    storage = LocalStorage(cfg.storage.etl_output.base_dir)
    late_trade = pa.Table.from_pylist(
        [
            {
                "ts_event": late,
                "ts_recv": DAY2 + NS,
                "venue_symbol": "x",
                "trade_id": "late",
                "price": Decimal("105"),
                "size": Decimal("2"),
                "side": "buy",
                "seq": 50,
            }
        ],
        schema=SCHEMAS["trades"],
    )
    lakemod.write_part(
        storage, Layout.of(cfg.storage.etl_output), "trades", "coinbase", "BTC-USD",
        "2024-01-02", "late", late_trade, 1000,
    )  # fmt: skip
    result = sqlmodels.run(cfg, select="bars_1m+", dates=["2024-01-02"])
    assert result.ok, result.to_dict()
    after = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    assert after == before  # day 1 was not rewritten by the day-2 run
    result = sqlmodels.run(cfg, select="bars_1m+", dates="2024-01-01")
    assert result.ok
    after = {(str(r["date"]), r["bar_start_ns"]): r for r in read_model(cfg, "bars_1m")}
    bar = after[("2024-01-01", DAY2 - 60 * NS)]
    assert (bar["open"], bar["volume"], bar["trade_count"]) == (Decimal(105), Decimal(2), 1)
    assert after[("2024-01-02", DAY2)] == before[("2024-01-02", DAY2)]
    day = {r["bar_start_ns"]: r for r in read_model(cfg, "bars_1d")}[DAY1]
    assert day["trade_count"] == 6 + 1
    with pytest.raises(ValueError, match="2024-13-01"):
        sqlmodels.run(cfg, dates=["2024-13-01"])


def test_test_unique_and_warn_severity_custom_project(tmp_path: Path) -> None:
    root = _project(
        tmp_path / "proj",
        {
            "sides": "select side, count(*) as n from {{ source('lake', 'trades') }} group by side",
            "dup": "select symbol from {{ source('lake', 'trades') }}",
        },
        {"assert_no_sell": "select * from {{ ref('sides') }} where side = 'sell'"},
    )
    (root / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n"
        "  - name: sides\n    columns:\n      - name: side\n        tests: [unique, not_null]\n"
        "  - name: dup\n    columns:\n      - name: symbol\n        tests:\n"
        "          - unique:\n              config: {severity: warn}\n"
    )
    cfg = build_lake(tmp_path / "lake")
    assert sqlmodels.run(cfg, project=root).ok
    result = sqlmodels.test(cfg, project=root)
    assert result.test("unique_sides_side").status == "pass"
    assert result.test("unique_dup_symbol").status == "warn"
    assert result.test("unique_dup_symbol").failures == 1  # BTC-USD repeats, ETH-USDT does not
    assert result.test("assert_no_sell").status == "fail"
    assert not result.ok


def test_sql_cli_run_test_json_and_exit_codes(tmp_path: Path) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from fluxforge.cli import main

    cfg = build_lake(tmp_path / "lake")
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"storage": {"base_dir": cfg.storage.etl_output.base_dir}}))
    runner = CliRunner()
    done = runner.invoke(main, ["sql", "run", "--config", str(conf), "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["ok"] and {m["name"] for m in out["models"]} >= {"bars_1m", "coverage_daily"}
    done = runner.invoke(main, ["sql", "test", "--config", str(conf), "-s", "bars_1m", "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["counts"]["pass"] > 0
    done = runner.invoke(main, ["sql", "run", "--config", str(conf), "-s", "nope"])
    assert done.exit_code == 2 and "no model 'nope'" in done.stderr
