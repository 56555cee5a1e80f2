"""The SQL mart ``feed_stats_hourly`` (dbt_like_sql/) equals ``fluxforge.feed_stats.hourly`` row
for row on a lake made from the real captures, with every hour cut into many segments so that
most hours merge several rows (quantiles from the summed histograms) and some keep one; the
macros of the merge rule are the module's output; the SQL expressions of the histogram rule
give what the Python functions give."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from replayed import replay

from fluxforge import feed_stats, sql_models
from fluxforge.config import Config, load_config
from fluxforge.refinery import process_ready
from fluxforge.storage import Layout, LocalStorage

pytestmark = pytest.mark.slow

MART = "feed_stats_hourly"
LINES_PER_SEGMENT = 400


def _mart_rows(cfg: Config) -> dict[tuple, dict]:
    """The mart as published (Parquet under {processed_dir}/models), read with plain DuckDB."""
    layer = cfg.storage.etl_output
    root = Path(layer.base_dir) / Layout.of(layer).model_dir(MART)
    files = sorted(str(p) for p in root.rglob("*.parquet"))
    assert files, f"{MART} published no file under {root}"
    rel = duckdb.sql(
        "select * from read_parquet($f, hive_partitioning=true, "
        "hive_types={'exchange': 'VARCHAR', 'symbol': 'VARCHAR', 'date': 'DATE'})",
        params={"f": files},
    )
    rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    out = {(r["exchange"], r["symbol"], r["channel"], r["hour_start_ns"]): r for r in rows}
    assert len(out) == len(rows), "duplicate hours in the mart"
    return out


def _python_rows(cfg: Config) -> dict[tuple, dict]:
    storage = LocalStorage(Path(cfg.storage.etl_output.base_dir))
    return {
        (r["exchange"], r["symbol"], r["channel"], int(r["hour"].timestamp()) * 10**9): r
        for r in feed_stats.read(storage).to_pylist()
    }


def _assert_equal(mart: dict[tuple, dict], want: dict[tuple, dict]) -> None:
    assert set(mart) == set(want)
    columns = [c for c in feed_stats.HOURLY_SCHEMA.names if c != "hour"]
    for key, w in want.items():
        got = mart[key]
        assert {c: got[c] for c in columns} == {c: w[c] for c in columns}, key
        assert got["hour_start"].isoformat() == w["hour"].replace(tzinfo=None).isoformat(), key
        assert got["date"] == w["hour"].date(), key


@pytest.fixture(scope="module")
def split_lake(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> Config:
    """Every capture replayed, its segments cut every LINES_PER_SEGMENT lines, then processed."""
    root = tmp_path_factory.mktemp("feed_mart")
    cfg_path = replay(root, str(captures / "*" / "*"))
    ready = root / "data/raw/ready/replay"
    counter = 0
    for seg in sorted(ready.glob("segment_*.ndjson")):
        hour = seg.name.split("_")[1]
        lines = seg.read_bytes().splitlines(keepends=True)
        seg.unlink()
        for i in range(0, len(lines), LINES_PER_SEGMENT):
            counter += 1
            chunk = b"".join(lines[i : i + LINES_PER_SEGMENT])
            (ready / f"segment_{hour}_{counter:05d}.ndjson").write_bytes(chunk)
    cfg = load_config(cfg_path, environ={})
    assert process_ready(cfg).failed == []
    return cfg


def test_feed_stats_mart_equals_python_hourly_row_for_row(split_lake: Config) -> None:
    result = sql_models.build(split_lake, select=[f"+{MART}"])
    assert result.ok, result.to_dict()
    tests = [n for n in result.nodes if n.kind == "test"]
    assert "assert_feed_stats_latency_ordered" in {n.name for n in tests}
    assert {n.status for n in tests} == {"pass"}
    want = _python_rows(split_lake)
    merged = [r for r in want.values() if not r["quantiles_exact"]]
    exact = [r for r in want.values() if r["quantiles_exact"] and r["latency_messages"]]
    # both paths of the rule are exercised: histogram-merged hours and single-row hours
    assert len(merged) >= 10 and len(exact) >= 5, (len(merged), len(exact))
    assert {r["exchange"] for r in want.values()} >= {"coinbase", "okx", "kraken", "bitget"}
    _assert_equal(_mart_rows(split_lake), want)

    # a refresh of one date (the incremental path) leaves the same rows
    date = min(merged, key=lambda r: r["hour"])["hour"].date().isoformat()
    again = sql_models.run(split_lake, select=[MART], dates=[date])
    assert again.ok, again.to_dict()
    _assert_equal(_mart_rows(split_lake), want)


def test_feed_stats_rule_macros_file_is_the_modules_output() -> None:
    path = Path(__file__).resolve().parents[2] / feed_stats.MACROS_PATH
    assert path.read_text() == feed_stats.dbt_macros(), "run: uv run python -m fluxforge.feed_stats"


def test_feed_stats_sql_histogram_expressions_equal_the_python_rule() -> None:
    bins = list(range(-900, 901))
    got = duckdb.sql(
        f"select b, {feed_stats.sql_bin_value('b')} from unnest($bins) as t(b) order by b",
        params={"bins": bins},
    ).fetchall()
    assert got == [(b, feed_stats.bin_value(b)) for b in bins]
    # ranks round half to even as Python does (n - 1 odd: q (n - 1) ends in .5 for q = 0.5)
    for q in feed_stats.QUANTILES:
        for n in (1, 2, 3, 4, 5, 6, 101, 1000, 12345):
            rank = duckdb.sql(f"select {feed_stats.sql_quantile_rank(str(q), str(n))}").fetchall()
            assert rank[0][0] == round(q * (n - 1)), (q, n)
    # the chosen bin's midpoint, clamped to the exact extremes, to the ns
    for b, lo, hi in ((40, 0, 10**9), (40, 0, 5_000), (-40, -1_000, 10**9), (0, -5, 5), (7, 1, 2)):
        value = duckdb.sql(f"select {feed_stats.sql_quantile_value(str(b), str(lo), str(hi))}")
        assert value.fetchall()[0][0] == round(min(max(feed_stats.bin_value(b), lo), hi))
