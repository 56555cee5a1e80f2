"""The SQL models and tiering on the real pipeline: captures replayed by the daemon, processed by
the refinery, then bars checked against trades read independently from the lake, and the
archived raw segments tiered and found again through the manifest."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from fluxforge import sql_models, tiering
from fluxforge.config import Config, load_config
from fluxforge.storage import LocalStorage

pytestmark = pytest.mark.slow
refinery = pytest.importorskip("fluxforge.refinery")
lake = pytest.importorskip("fluxforge.lake")

MINUTE = 60 * 1_000_000_000


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> tuple[Config, dict]:
    root = tmp_path_factory.mktemp("pipeline")
    conf = root / "fluxforge.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "storage": {"backend": "local", "base_dir": str(root / "data")},
                "sources": [
                    {
                        "name": "replay",
                        "type": "replay",
                        "path": str(captures / "*" / "*"),
                        "speed": 0,
                    }
                ],
                "ingestion": {"segment_max_bytes": 1_000_000},
                "tiering": {
                    "warm_dir": str(root / "warm"),
                    "cold": {"backend": "local", "base_dir": str(root / "cold")},
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fluxforge.cli",
            "ingest",
            "--config",
            str(conf),
            "--source",
            "replay",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_config(conf, environ={})
    report = refinery.process_ready(cfg)
    assert report.to_dict()["trades"] > 0, (report.to_dict(), done.stderr[-2000:])
    archive = root / "data" / "raw" / "archive"
    segments = {
        (p.parent.name, p.name): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in archive.rglob("segment_*.ndjson")
    }
    assert segments
    return cfg, segments


def test_sql_models_on_pipeline_output_bars_match_lake_trades(processed) -> None:
    cfg, _ = processed
    result = sql_models.build(cfg)
    failing = [(n.name, n.status, n.failures, n.message) for n in result.nodes if not _ok(n)]
    assert failing == []
    assert result.ok

    storage = LocalStorage(cfg.storage.etl_output.base_dir)
    trades = lake.read_table(storage, "trades").to_pylist()
    assert trades
    # the bar rule (fluxforge/bar_rule.py) written out in plain Python: a trade id counts once
    # per exchange, symbol and receive date, at its first receipt
    seen, buckets = set(), defaultdict(list)
    for t in sorted(trades, key=lambda t: (t["ts_recv"], t["seq"], t["price"], t["size"])):
        if t["trade_id"]:
            key = (t["exchange"], t["symbol"], t["date"], t["trade_id"])
            if key in seen:
                continue
            seen.add(key)
        ts = t["ts_event"] if t["ts_event"] > 0 else t["ts_recv"]
        buckets[(t["exchange"], t["symbol"], ts - ts % MINUTE)].append(t)
    for ts in buckets.values():
        ts.sort(
            key=lambda t: (
                t["ts_event"] if t["ts_event"] > 0 else t["ts_recv"],
                t["ts_recv"],
                t["seq"],
                len(t["trade_id"] or ""),
                (t["trade_id"] or "").encode(),
                t["price"],
            )
        )

    import duckdb

    files = [
        str(p)
        for p in (Path(cfg.storage.etl_output.base_dir) / "processed/models/bars_1m").rglob(
            "*.parquet"
        )
    ]
    rel = duckdb.sql(
        "select * from read_parquet($f, hive_partitioning=true, hive_types={'exchange': "
        "'VARCHAR', 'symbol': 'VARCHAR', 'date': 'DATE'})",
        params={"f": files},
    )
    bars = {
        (r["exchange"], r["symbol"], r["bar_start_ns"]): r
        for r in (dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall())
    }
    assert set(bars) == set(buckets)
    for key, ts in buckets.items():
        bar = bars[key]
        prices = [Decimal(t["price"]) for t in ts]
        sizes = [Decimal(t["size"]) for t in ts]
        assert bar["trade_count"] == len(ts), key
        assert bar["volume"] == sum(sizes, Decimal(0)), key
        assert (bar["high"], bar["low"]) == (max(prices), min(prices)), key
        assert bar["close"] == prices[-1] and bar["open"] == prices[0], key
        if sum(sizes):
            vwap = float(sum((p * s for p, s in zip(prices, sizes, strict=True)), Decimal(0)))
            assert bar["vwap"] == pytest.approx(vwap / float(sum(sizes)), rel=1e-9), key


def test_tier_pipeline_archive_every_segment_found_with_checksum(processed) -> None:
    cfg, segments = processed
    far_future = 4_000_000_000.0  # year 2096: every segment is older than cold_after_s
    report = tiering.tier(cfg, now=far_future)
    assert len(report.moves) == len(segments)
    assert report.segments == {"cold": len(segments)}
    days = {(src, f"{n[8:12]}-{n[12:14]}-{n[14:16]}") for src, n in segments}
    found = {}
    for source, date in days:
        for loc in tiering.locate(cfg, source, date):
            found[(loc.source, loc.name)] = loc
    assert {k: v.sha256 for k, v in found.items()} == segments
    for loc in found.values():
        assert loc.tier == "cold"
        assert hashlib.sha256(tiering.read_segment(cfg, loc)).hexdigest() == loc.sha256


def test_restore_then_rebuild_tiered_days_gives_identical_lake(processed) -> None:
    cfg, segments = processed
    tiering.tier(cfg, now=4_000_000_000.0)
    lake_dir = Path(cfg.storage.etl_output.base_dir) / "processed"
    tables = [d for d in lake_dir.iterdir() if d.name != "models"]
    before = {p: p.read_bytes() for d in tables for p in sorted(d.rglob("*.parquet"))}
    days = sorted({(src, f"{n[8:12]}-{n[12:14]}-{n[14:16]}") for src, n in segments})
    for source, date in days:
        restored = tiering.restore(cfg, source, date)
        assert restored and all(loc.tier == "hot" for loc in restored)
        refinery.rebuild(cfg, source, date)
    after = {p: p.read_bytes() for d in tables for p in sorted(d.rglob("*.parquet"))}
    assert after == before
    report = tiering.tier(cfg, now=4_000_000_000.0)
    assert report.segments == {"cold": len(segments)} and report.moves == []


def test_rebuild_of_a_tiered_day_restores_it_by_itself(processed) -> None:
    cfg, segments = processed
    tiering.tier(cfg, now=4_000_000_000.0)
    lake_dir = Path(cfg.storage.etl_output.base_dir) / "processed"
    tables = [d for d in lake_dir.iterdir() if d.name != "models"]
    before = {p: p.read_bytes() for d in tables for p in sorted(d.rglob("*.parquet"))}
    days = sorted({(src, f"{n[8:12]}-{n[12:14]}-{n[14:16]}") for src, n in segments})
    rebuilt = 0
    for source, date in days:
        rebuilt += len(refinery.rebuild(cfg, source, date).segments)
    assert rebuilt == len(segments)
    after = {p: p.read_bytes() for d in tables for p in sorted(d.rglob("*.parquet"))}
    assert after == before


def test_sql_models_rerun_on_the_same_lake_give_identical_values(processed) -> None:
    """Ordered double aggregates: DuckDB's threads may add in any order, the models may not."""
    cfg, _ = processed
    import duckdb

    models = Path(cfg.storage.etl_output.base_dir) / "processed/models"

    def snapshot() -> dict[str, list[tuple]]:
        assert sql_models.run(cfg).ok
        out = {}
        for name in ("bars_1m", "bars_5m", "bars_1h", "bars_1d", "book_stats_1h"):
            files = sorted(str(p) for p in (models / name).rglob("*.parquet"))
            assert files, name
            rel = duckdb.sql("select * from read_parquet($f) order by all", params={"f": files})
            out[name] = rel.fetchall()
        return out

    first = snapshot()
    assert any(len(rows) > 1 for rows in first.values())
    assert snapshot() == first


def _ok(node: sql_models.NodeResult) -> bool:
    return node.status in ("success", "pass")
