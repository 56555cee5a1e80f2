"""Hot tables on a real PostgreSQL server: COPY loads, day partitions, idempotence, bars."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import yaml
from hot_lake import LEVELS, build_lake, config, lake_rows

from fluxforge import lake
from fluxforge.hot import HotStore, load_files, load_lake, table_sizes
from fluxforge.tables import SCHEMAS

pytestmark = pytest.mark.services

TODAY = date(2024, 3, 10)
DAYS = [TODAY - timedelta(days=n) for n in (5, 1, 0)]


def _today() -> date:
    return datetime.now(UTC).date()


def test_hot_load_lake_days_partitioned_and_reload_adds_nothing(tmp_path: Path, pg_db: str) -> None:
    storage = build_lake(tmp_path, DAYS)
    cfg = config(tmp_path, pg_db)
    first = load_lake(cfg, pg_db, hot_days=30, today=TODAY)
    assert first.days == [d.isoformat() for d in sorted(DAYS)]
    for table in ("trades", "quotes", "book_snapshots"):
        expected = lake_rows(storage, table, DAYS)
        assert first.rows_read[table] == first.rows_inserted[table] == expected > 0

    hot = HotStore(pg_db, cfg.lifecycle.hot_intervals)
    assert hot.days("trades") == sorted(DAYS)
    assert hot.days("bars_1m") == sorted(DAYS)
    counts = {t: hot.count(t) for t in hot.tables}

    again = load_lake(cfg, pg_db, hot_days=30, today=TODAY)
    assert again.rows_read["trades"] == first.rows_read["trades"]
    assert again.rows_inserted["trades"] == again.rows_inserted["quotes"] == 0
    assert {t: hot.count(t) for t in hot.tables} == counts


def test_hot_load_window_skips_days_before_hot_days(tmp_path: Path, pg_db: str) -> None:
    build_lake(tmp_path, DAYS)
    cfg = config(tmp_path, pg_db)
    report = load_lake(cfg, pg_db, hot_days=2, today=TODAY)
    assert report.days == [DAYS[1].isoformat(), DAYS[2].isoformat()]
    assert HotStore(pg_db).days("quotes") == [DAYS[1], DAYS[2]]


def test_hot_load_values_roundtrip_exactly(tmp_path: Path, pg_db: str) -> None:
    storage = build_lake(tmp_path, [TODAY], segments=1)
    load_lake(config(tmp_path, pg_db), pg_db, hot_days=1, today=TODAY)
    hot = HotStore(pg_db)
    for table in ("trades", "quotes"):
        got = hot.read(table, "coinbase", "BTC-USD", TODAY)
        (key,) = lake.list_parts(storage, table, "coinbase", "BTC-USD", TODAY.isoformat())
        want = lake.read_file(storage, key, table)
        assert got.schema == SCHEMAS[table]
        assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)
    snaps = hot.read("book_snapshots", "kraken", "ETH-USD", TODAY)
    assert snaps.num_rows == 3
    row = snaps.to_pylist()[0]
    assert row["depth"] == hot.book_depth < LEVELS
    assert len(row["bid_px"]) == len(row["ask_sz"]) == hot.book_depth
    assert row["ask_sz"][0] == Decimal("0.000000000001")


def test_hot_load_trades_without_ids_are_all_kept(tmp_path: Path, pg_db: str) -> None:
    storage = build_lake(tmp_path, [TODAY], segments=1)
    load_lake(config(tmp_path, pg_db), pg_db, hot_days=1, today=TODAY)
    with psycopg.connect(pg_db) as conn:
        no_id = conn.execute("SELECT count(*) FROM trades WHERE trade_id = ''").fetchone()[0]
        two_per_line = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM trades GROUP BY exchange, symbol, seq"
            " HAVING count(*) = 2) t"
        ).fetchone()[0]
    want = lake.read_table(storage, "trades")
    assert no_id == sum(1 for t in want.column("trade_id").to_pylist() if t == "")
    assert two_per_line > 0


def test_hot_bars_from_loaded_trades_match_aggregates(tmp_path: Path, pg_db: str) -> None:
    build_lake(tmp_path, [TODAY], segments=1, lines=130)
    load_lake(config(tmp_path, pg_db), pg_db, hot_days=1, today=TODAY)
    with psycopg.connect(pg_db) as conn:
        trades = conn.execute(
            "SELECT count(*), sum(size), max(price), min(price),"
            " count(DISTINCT ts_event - ts_event % 60000000000) FROM trades"
            " WHERE exchange = 'coinbase'"
        ).fetchone()
        bars = conn.execute(
            "SELECT sum(trades), sum(volume), max(high), min(low), count(*) FROM bars_1m"
            " WHERE exchange = 'coinbase'"
        ).fetchone()
        hourly = conn.execute("SELECT sum(trades) FROM bars_1h WHERE exchange = 'coinbase'")
        first = conn.execute(
            "SELECT open, vwap, ts FROM bars_1m WHERE exchange = 'coinbase' ORDER BY ts LIMIT 1"
        ).fetchone()
        first_trade = conn.execute(
            "SELECT price, ts_event FROM trades WHERE exchange = 'coinbase'"
            " ORDER BY ts_event, seq, ord LIMIT 1"
        ).fetchone()
        assert hourly.fetchone()[0] == trades[0]
    assert bars == trades
    # 130 one-second lines span three minutes, and the first trade's event time is 1 µs
    # before midnight: four 1m buckets
    assert bars[4] == 4
    assert first[0] == first_trade[0]
    assert first[2] == first_trade[1] - first_trade[1] % 60_000_000_000
    assert Decimal(100) <= first[1] <= Decimal(106)


def test_hot_table_sizes_loaded_days_rows_per_day(tmp_path: Path, pg_db: str) -> None:
    build_lake(tmp_path, DAYS[1:])
    load_lake(config(tmp_path, pg_db), pg_db, hot_days=3, today=TODAY)
    sizes = table_sizes(pg_db, ("1m", "1h"))
    assert set(sizes["trades"]) == {d.isoformat() for d in DAYS[1:]}
    assert all(n > 0 for n in sizes["quotes"].values())


def test_hot_load_cli_json_prints_rows_per_table(tmp_path: Path, pg_db: str) -> None:
    build_lake(tmp_path / "data", [_today()], segments=1)
    cfg = {
        "storage": {"backend": "local", "base_dir": str(tmp_path / "data")},
        "hot_store": {"dsn": pg_db},
        "lifecycle": {"hot_intervals": ["1m"]},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", "hot", "load", "--config", "c.yaml", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["days"] == [_today().isoformat()]
    assert out["rows_inserted"]["trades"] > 0 and out["rows_inserted"]["bars_1m"] > 0


def test_hot_load_files_of_one_run_only_inside_window(tmp_path: Path, pg_db: str) -> None:
    storage = build_lake(tmp_path, DAYS, segments=1)
    cfg = config(tmp_path, pg_db, hot_days=2)
    keys = lake.list_parts(storage, "trades") + lake.list_parts(storage, "quotes")
    report = load_files(cfg, pg_db, keys, today=TODAY)
    assert report.days == [DAYS[1].isoformat(), DAYS[2].isoformat()]
    hot = HotStore(pg_db, cfg.lifecycle.hot_intervals)
    assert hot.count("trades") == lake_rows(storage, "trades", DAYS[1:])
    assert hot.days("book_snapshots") == []  # not among the files given
    assert hot.days("bars_1h") == DAYS[1:]


def test_hot_store_with_numeric_38_18_columns_altered_to_lake_scale(
    tmp_path: Path, pg_db: str
) -> None:
    """A hot store created before the lake's decimal(38, 12) (numeric(38,18) columns, rows
    loaded) is altered in place at the next load, partitions included, values unchanged."""
    storage = build_lake(tmp_path, [TODAY], segments=1)
    cfg = config(tmp_path, pg_db)
    load_lake(cfg, pg_db, hot_days=1, today=TODAY)
    with psycopg.connect(pg_db) as conn:
        conn.execute(
            "ALTER TABLE trades ALTER COLUMN price TYPE numeric(38,18),"
            " ALTER COLUMN size TYPE numeric(38,18)"
        )
        conn.execute("ALTER TABLE book_snapshots ALTER COLUMN ask_sz TYPE numeric(38,18)[]")
        conn.execute("ALTER TABLE bars_1m ALTER COLUMN vwap TYPE numeric(38,18)")
    again = load_lake(cfg, pg_db, hot_days=1, today=TODAY)
    assert again.rows_inserted["trades"] == 0
    with psycopg.connect(pg_db) as conn:
        types = conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relname LIKE ANY (ARRAY['trades%', 'book_snapshots%', 'bars_1m%'])"
            " AND a.attname IN ('price', 'size', 'ask_sz', 'vwap') AND a.attnum > 0"
        ).fetchall()
    assert {t for _rel, _col, t in types} == {"numeric(38,12)", "numeric(38,12)[]"}
    assert any(rel.startswith("trades_p") for rel, _col, _t in types)  # partitions too
    hot = HotStore(pg_db)
    got = hot.read("trades", "coinbase", "BTC-USD", TODAY)
    (key,) = lake.list_parts(storage, "trades", "coinbase", "BTC-USD", TODAY.isoformat())
    want = lake.read_file(storage, key, "trades")
    assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)
    snaps = hot.read("book_snapshots", "kraken", "ETH-USD", TODAY)
    assert snaps.to_pylist()[0]["ask_sz"][0] == Decimal("0.000000000001")
