"""``price * size`` and ``sum(price * size)`` over the lake's Delta tables, read without
FluxForge, on every capture: DuckDB over the table's Arrow dataset and Polars ``scan_delta``
give the exact sum Python's Decimal gives (docs/data-guide.md, "Types": decimal(38, 12) keeps
the product inside 38 digits; decimal(38, 18) made DuckDB overflow on any trade)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from fluxforge import lake
from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.config import config_from_dict
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import DECIMAL

pytestmark = pytest.mark.slow

EXCHANGES = ("coinbase", "binanceusdm", "kraken", "okx", "bitget")


@pytest.fixture(scope="module")
def lake_root(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every websocket / REST capture refined into one lake, one source per exchange."""
    base = tmp_path_factory.mktemp("notional")
    cfg = config_from_dict(
        {"storage": {"backend": "local", "base_dir": str(base)}, "hot_store": {"embedded": False}},
        environ={},
    )
    layout = Layout.of(cfg.storage.ingestion)
    for folder in sorted(p for p in captures.iterdir() if p.is_dir()):
        files = [p for p in sorted(folder.iterdir()) if ".ws." in p.name or ".http." in p.name]
        recs = [r for r in merge_captures(files) if r.kind in ("recv", "rest")]
        ex = exchange_from_filename(files[0].name)
        lines = [
            encode_envelope(
                r.ts,
                ex,
                ex,
                i,
                "msg" if r.kind == "recv" else "rest",
                frame_payload(r.payload),
                r.url if r.kind == "rest" else None,
            )
            for i, r in enumerate(recs, 1)
        ]
        hour = datetime.fromtimestamp(recs[0].ts // 10**9, tz=UTC)
        LocalStorage(base).write_bytes(
            layout.segment("ready", ex, segment_name(hour, 1)), b"".join(lines)
        )
    assert not process_ready(cfg).failed
    return base


def _exact(root: Path, table: str, exchange: str) -> tuple[int, Decimal]:
    rows = lake.read_table(LocalStorage(root), table, exchange=exchange, columns=["price", "size"])
    pairs = list(zip(rows["price"].to_pylist(), rows["size"].to_pylist(), strict=True))
    return len(pairs), sum((p * s for p, s in pairs), Decimal(0))


@pytest.mark.parametrize("table", ["trades", "book_deltas"])
def test_notional_sum_in_duckdb_and_polars_equals_exact_decimal_sum(
    lake_root: Path, table: str
) -> None:
    uri = lake.table_uri(LocalStorage(lake_root), None, table)
    assert DeltaTable(uri).schema().to_arrow().field("price").type == DECIMAL
    con = duckdb.connect()
    con.register(table, DeltaTable(uri).to_pyarrow_dataset())
    scan = pl.scan_delta(uri)
    seen = 0
    for exchange in EXCHANGES:
        n, exact = _exact(lake_root, table, exchange)
        assert n > 0 and exact > 0, exchange
        seen += 1
        kind, count, total = con.sql(
            f"select typeof(sum(price * size)), count(*), sum(price * size) from {table} "
            "where exchange = ?",
            params=[exchange],
        ).fetchall()[0]
        assert kind == "DECIMAL(38,24)"  # 14 integer digits of notional, 24 decimals: exact
        assert (count, total) == (n, exact), exchange
        got = (
            scan.filter(pl.col("exchange") == exchange)
            .select(
                pl.len().alias("n"),
                # Polars keeps scale 12 for price * size (each product rounded to 1e-12);
                # widening one side to scale 24 makes the product exact
                (pl.col("price").cast(pl.Decimal(38, 24)) * pl.col("size")).sum().alias("exact"),
                (pl.col("price") * pl.col("size")).sum().alias("rounded"),
            )
            .collect()
            .row(0, named=True)
        )
        assert (got["n"], got["exact"]) == (n, exact), exchange
        assert abs(got["rounded"] - exact) <= n * Decimal("1e-12"), exchange
    assert seen == len(EXCHANGES)
