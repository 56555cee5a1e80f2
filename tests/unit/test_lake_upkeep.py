"""lake_upkeep: compaction in one commit, vacuum, stale partitions, in-place migration; the
tables are read without FluxForge (Polars, pandas through deltalake, DuckDB over Arrow)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxforge import lake, lake_upkeep, versions
from fluxforge.config import PathNames, config_from_dict
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import BOOK_DELTAS, DECIMAL

LAYOUT = Layout(PathNames())
DAY = "2024-01-02"
DAY_NS = 1_704_153_600 * 10**9  # 2024-01-02T00:00:00Z
NOW = dt.datetime(2024, 1, 5, tzinfo=dt.UTC)


def _cfg(root: Path, **lake_cfg):
    return config_from_dict(
        {
            "storage": {"backend": "local", "base_dir": str(root)},
            "refinery": {"snapshot_interval_s": 60},
            "lake": lake_cfg,
        }
    )


def _deltas(start_s: int, n: int, seq0: int) -> pa.Table:
    ts = [DAY_NS + (start_s + i) * 10**9 for i in range(n)]
    return pa.table(
        {
            "ts_event": pa.array(ts, pa.int64()),
            "ts_recv": pa.array(ts, pa.int64()),
            "venue_symbol": ["BTC-USD"] * n,
            "side": ["bid"] * n,
            "price": pa.array([str(100 + i) for i in range(n)]).cast(DECIMAL),
            "size": pa.array(["1"] * n).cast(DECIMAL),
            "update_id": pa.array([-1] * n, pa.int64()),
            "is_snapshot": [False] * n,
            "book_epoch": pa.array([1] * n, pa.int32()),
            "seq": pa.array(range(seq0, seq0 + n), pa.int64()),
        },
        schema=BOOK_DELTAS,
    )


def _segments(root: Path, count: int = 6, rows: int = 50) -> lake.Lake:
    """`count` per-segment commits of book deltas, each spanning 50 s of one partition."""
    lk = lake.Lake(LocalStorage(root), LAYOUT)
    for i in range(count):
        staged = lk.stage(
            "book_deltas", _deltas(i * rows, rows, i * rows), "coinbase", "BTC-USD", DAY,
            f"src-segment_20240102T00_{i:05d}", 1000, 60 * 10**9,
        )  # fmt: skip
        assert lk.commit("book_deltas", [staged], app=("fluxforge/src", (i + 1) * rows))
    return lk


def test_compact_closed_day_one_sorted_file_in_one_commit(tmp_path: Path) -> None:
    lk = _segments(tmp_path)
    before = lake.read_table(lk.storage, "book_deltas")
    version = lk.table("book_deltas").version()
    report = lake_upkeep.compact(_cfg(tmp_path), now=NOW, lake=lk).to_dict()
    assert report["partitions_compacted"] == 1
    assert (report["files_in"], report["files_out"]) == (6, 1)
    assert lk.table("book_deltas").version() == version + 1  # one commit replaced all six
    files = lk.files("book_deltas")
    assert len(files) == 1 and files[0].name.startswith("part-compact-v")
    after = lake.read_table(lk.storage, "book_deltas")
    assert after.equals(before)  # same rows, same (receive) order
    # row groups still break at the 60 s snapshot windows: 300 s of rows -> 5 groups
    meta = pq.ParquetFile(tmp_path / files[0].key).metadata
    assert meta.num_row_groups == 5
    # time travel still sees the parts until vacuum
    assert lake.read_table(lk.storage, "book_deltas", as_of=version).equals(before)
    # compacting again changes nothing
    assert lake_upkeep.compact(_cfg(tmp_path), now=NOW, lake=lk).to_dict()["files_in"] == 0


def test_compact_leaves_open_days_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    lk = _segments(tmp_path, count=3)
    open_day = dt.datetime(2024, 1, 3, 0, 30, tzinfo=dt.UTC)  # 30 min after the day ended
    cfg = _cfg(tmp_path, compact_after_s=3600)
    assert lake_upkeep.compact(cfg, now=open_day, lake=lk).compacted == []
    dry = lake_upkeep.compact(cfg, now=NOW, dry_run=True, lake=lk).to_dict()
    assert dry["partitions_compacted"] == 1 and len(lk.files("book_deltas")) == 3


def test_vacuum_deletes_replaced_files_after_retention(tmp_path: Path) -> None:
    lk = _segments(tmp_path, count=3)
    lake_upkeep.compact(_cfg(tmp_path), now=NOW, lake=lk)
    parts = list((tmp_path / "processed/book_deltas").rglob("part-src-*.parquet"))
    assert len(parts) == 3
    dry = lake_upkeep.vacuum(_cfg(tmp_path), dry_run=True, retention_days=0, lake=lk)
    assert dry.vacuumed["book_deltas"] == 3 and all(p.exists() for p in parts)
    kept = lake_upkeep.vacuum(_cfg(tmp_path), lake=lk)  # default retention: 7 days
    assert kept.vacuumed["book_deltas"] == 0
    done = lake_upkeep.vacuum(_cfg(tmp_path), retention_days=0, lake=lk)
    assert done.vacuumed["book_deltas"] == 3 and not any(p.exists() for p in parts)
    assert lake.read_table(lk.storage, "book_deltas").num_rows == 150


def test_vacuum_deletes_files_no_commit_names_once_past_the_retention(tmp_path: Path) -> None:
    """A crash between staging and committing leaves a file under its own part name (staged
    files are written in place), maybe torn, or a temporary file: no commit names them.
    Vacuum keeps them for the retention (a running attempt's staged files are as fresh),
    then deletes them; committed files stay."""
    lk = _segments(tmp_path, count=1)
    folder = tmp_path / lk.files("book_deltas")[0].key.rsplit("/", 1)[0]
    torn = folder / "part-src-crashed-v1-0123456789ab.parquet"
    torn.write_bytes(b"PAR1 torn")
    tmp = folder / ".tmp-crashed"
    tmp.write_bytes(b"x")
    kept = lake_upkeep.vacuum(_cfg(tmp_path), lake=lk)  # default retention: 7 days
    assert kept.vacuumed["book_deltas"] == 0 and torn.exists() and tmp.exists()
    done = lake_upkeep.vacuum(_cfg(tmp_path), retention_days=0, lake=lk)
    assert done.vacuumed["book_deltas"] == 2 and not torn.exists() and not tmp.exists()
    assert lake.read_table(lk.storage, "book_deltas").num_rows == 50


def test_stale_partitions_after_a_normalizer_version_bump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lk = _segments(tmp_path, count=2)
    cfg = _cfg(tmp_path)
    assert lake_upkeep.stale(cfg, lk) == []
    monkeypatch.setitem(versions.NORMALIZERS, "coinbase", versions.NORMALIZERS["coinbase"] + 1)
    found = lake_upkeep.stale(cfg, lk)
    assert [(p.table, p.exchange, p.date, p.files) for p in found] == [
        ("book_deltas", "coinbase", DAY, 2)
    ]
    assert found[0].built_with == "v1.1" and found[0].current == "v2.1"
    # compaction keeps the oldest tag: a compacted stale partition is still stale
    lake_upkeep.compact(cfg, now=NOW, lake=lk)
    assert [p.files for p in lake_upkeep.stale(cfg, lk)] == [1]


def test_migrate_part_file_lake_in_place_idempotent(tmp_path: Path) -> None:
    part = tmp_path / "processed/book_deltas/exchange=coinbase/symbol=BTC-USD/date=2024-01-02"
    part.mkdir(parents=True)
    for i in range(2):
        pq.write_table(
            _deltas(i * 10, 10, i * 10), part / f"part-src-segment_20240102T00_{i}.parquet"
        )
    cfg = _cfg(tmp_path)
    dry = lake_upkeep.migrate(cfg, dry_run=True).to_dict()
    assert dry["tables"]["book_deltas"] == "2 files would be committed"
    assert not (tmp_path / "processed/book_deltas/_delta_log").exists()
    assert lake_upkeep.migrate(cfg).to_dict()["tables"]["book_deltas"] == "2 files committed"
    storage = LocalStorage(tmp_path)
    data = lake.read_table(storage, "book_deltas", exchange="coinbase")
    assert data.num_rows == 20 and set(data["date"].to_pylist()) == {DAY}
    assert lake_upkeep.migrate(cfg).tables["book_deltas"] == "already a Delta table"
    # migrated parts carry no version tag: they are reported stale (rebuild to refresh)
    assert [p.built_with for p in lake_upkeep.stale(cfg)] == ["untagged"]
    # and new commits go on top of the migrated table
    lk = lake.Lake(storage, LAYOUT)
    lk.commit(
        "book_deltas",
        [lk.stage("book_deltas", _deltas(100, 5, 100), "coinbase", "BTC-USD", DAY, "x")],
    )
    assert lake.read_table(storage, "book_deltas").num_rows == 25


def test_lake_tables_read_without_fluxforge(tmp_path: Path) -> None:
    """Polars scan_delta, pandas through deltalake, DuckDB over the Arrow dataset: each prunes
    partitions and sees the committed rows only (a staged, uncommitted file is invisible)."""
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    lk = _segments(tmp_path, count=2)
    lk.stage("book_deltas", _deltas(900, 7, 900), "coinbase", "BTC-USD", DAY, "never-committed")
    lk.commit(
        "book_deltas",
        [lk.stage("book_deltas", _deltas(0, 3, 0), "kraken", "BTC-USD", "2024-01-03", "k")],
    )
    uri = lake.table_uri(lk.storage, LAYOUT, "book_deltas")
    frame = pl.scan_delta(uri).filter(pl.col("exchange") == "coinbase").collect()
    assert frame.height == 100 and frame["date"].unique().to_list() == [DAY]
    pdf = DeltaTable(uri).to_pandas(filters=[("date", "=", "2024-01-03")])
    assert len(pdf) == 3 and set(pdf["exchange"]) == {"kraken"}
    dataset = DeltaTable(uri).to_pyarrow_dataset(partitions=[("exchange", "=", "coinbase")])
    # filters on columns outside the time/seq set need their statistics in the log too
    # (delta-rs guards each file with them: a missing one empties every filtered read)
    import pyarrow.compute as pc

    assert dataset.to_table(filter=pc.field("side") == "bid").num_rows == 100
    assert dataset.to_table(filter=pc.field("book_epoch") == 1).num_rows == 100
    assert dataset.to_table(filter=pc.field("side") == "ask").num_rows == 0
    con = duckdb.connect()
    con.register("book_deltas", dataset)
    # decimal(38, 12) * decimal(38, 12) is decimal(38, 24) in DuckDB: no cast needed
    (count, notional) = con.sql(
        "select count(*), sum(price * size) from book_deltas where date = '2024-01-02'"
    ).fetchall()[0]
    assert count == 100 and notional == sum(100 + i for i in range(50)) * 2
    # times are timestamps everywhere (microseconds, UTC), and filter as times
    assert frame.schema["ts_recv"] == pl.Datetime("us", "UTC")
    assert str(pdf["ts_recv"].dtype) == "datetime64[us, UTC]"
    (first,) = con.sql(
        "select count(*) from book_deltas where ts_recv >= timestamptz '2024-01-02 00:01:00+00'"
    ).fetchall()[0]
    assert first == 40


OLD_DECIMAL = pa.decimal128(38, 18)  # the lake's decimal type before decimal(38, 12)


def _old_types(schema: pa.Schema) -> pa.Schema:
    def old(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(kind):
            return pa.int64()  # times were int64 ns then too
        if pa.types.is_decimal(kind):
            return OLD_DECIMAL
        if pa.types.is_list(kind) and pa.types.is_decimal(kind.value_type):
            return pa.list_(OLD_DECIMAL)
        return kind

    return pa.schema([pa.field(f.name, old(f.type)) for f in schema])


def _old_lake(root: Path, prices: list[str]) -> lake.Lake:
    """A book_deltas Delta table as the lake wrote it with decimal(38, 18): one commit per
    segment with its app transaction, files named part-{stem}-v1.1-{hash}."""
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction, CommitProperties, Transaction

    lk = lake.Lake(LocalStorage(root), LAYOUT)
    uri = lk.uri("book_deltas")
    DeltaTable.create(
        uri,
        schema=_old_types(lake.table_schema("book_deltas")),
        partition_by=["exchange", "symbol", "date"],
    )
    old = _old_types(BOOK_DELTAS)
    for i, price in enumerate(prices):
        rows = (
            _deltas(i * 10, 10, i * 10)
            .set_column(4, "price", pa.array([price] * 10).cast(OLD_DECIMAL))
            .cast(old)
        )
        name = f"part-src-segment_20240102T00_{i:05d}-v1.1-{i:012d}.parquet"
        rel = f"exchange=coinbase/symbol=BTC-USD/date={DAY}/{name}"
        (root / "processed/book_deltas" / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, root / "processed/book_deltas" / rel)
        add = AddAction(
            rel, (root / "processed/book_deltas" / rel).stat().st_size,
            {"exchange": "coinbase", "symbol": "BTC-USD", "date": DAY}, 1, True,
            lake.file_stats(rows),
        )  # fmt: skip
        app = CommitProperties(app_transactions=[Transaction("fluxforge/src", 10 * (i + 1))])
        DeltaTable(uri).create_write_transaction(
            [add], mode="append", schema=_old_types(lake.table_schema("book_deltas")),
            partition_by=["exchange", "symbol", "date"], commit_properties=app,
        )  # fmt: skip
    return lk


def test_migrate_decimal_18_table_rewritten_to_scale_12_in_one_commit(tmp_path: Path) -> None:
    import duckdb
    from deltalake import DeltaTable

    lk = _old_lake(tmp_path, ["100.5", "0.000000000001"])
    cfg = _cfg(tmp_path)
    before = lk.table("book_deltas").version()
    # a writer never appends scale-12 files under the old schema: it names the way out
    new = lk.stage("book_deltas", _deltas(500, 3, 500), "coinbase", "BTC-USD", DAY, "x")
    with pytest.raises(lake.LakeError, match="fluxforge lake migrate"):
        lk.commit("book_deltas", [new])
    dry = lake_upkeep.migrate(cfg, dry_run=True, lake=lk).tables["book_deltas"]
    assert dry.startswith("2 files would be rewritten to the current types (")
    assert "price: decimal128(38, 18) -> decimal128(38, 12)" in dry
    assert lk.table("book_deltas").version() == before
    done = lake_upkeep.migrate(cfg, lake=lk).tables["book_deltas"]
    assert done.startswith("2 files rewritten")
    handle = lk.table("book_deltas")
    assert handle.version() == before + 1  # one commit: schema and files together
    assert pa.schema(handle.schema().to_arrow()) == lake.table_schema("book_deltas")
    # same rows, same order, exact values; stems and version tags kept, app transaction kept
    old_rows = lake.read_table(lk.storage, "book_deltas", as_of=before)
    rows = lake.read_table(lk.storage, "book_deltas")
    assert rows.schema.field("price").type == DECIMAL
    assert rows.to_pylist() == old_rows.to_pylist()
    assert rows["price"].to_pylist()[::10] == [Decimal("100.5"), Decimal("0.000000000001")]
    names = [f.name for f in lk.files("book_deltas")]
    assert [n[: len("part-src-segment_20240102T00_00000-v1.1-")] for n in names] == [
        f"part-src-segment_20240102T00_{i:05d}-v1.1-" for i in range(2)
    ]
    assert lk.transaction_version("book_deltas", "fluxforge/src") == 20
    uri = lk.uri("book_deltas")
    con = duckdb.connect()
    con.register("d", DeltaTable(uri).to_pyarrow_dataset())
    notional = con.sql("select sum(price * size) from d").fetchall()[0][0]
    assert notional == 10 * (Decimal("100.5") + Decimal("0.000000000001"))
    # the writer commits again, and a second migration changes nothing
    assert lk.commit("book_deltas", [new])
    assert lake_upkeep.migrate(cfg, lake=lk).tables["book_deltas"] == "already a Delta table"


def test_migrate_value_past_the_new_scale_stops_naming_the_file(tmp_path: Path) -> None:
    lk = _old_lake(tmp_path, ["100.5", "0.0000000000001"])  # 13 decimals: not exact at 12
    before = lk.table("book_deltas").version()
    with pytest.raises(lake.LakeError, match=r"segment_20240102T00_00001-v1\.1-.*data loss"):
        lake_upkeep.migrate(_cfg(tmp_path), lake=lk)
    assert lk.table("book_deltas").version() == before  # nothing committed


def test_migrate_part_file_lake_with_decimal_18_files_converted_then_rewritten(
    tmp_path: Path,
) -> None:
    part = tmp_path / "processed/book_deltas/exchange=coinbase/symbol=BTC-USD/date=2024-01-02"
    part.mkdir(parents=True)
    for i in range(2):
        rows = _deltas(i * 10, 10, i * 10).cast(_old_types(BOOK_DELTAS))
        pq.write_table(rows, part / f"part-src-segment_20240102T00_{i}.parquet")
    cfg = _cfg(tmp_path)
    done = lake_upkeep.migrate(cfg).tables["book_deltas"]
    assert done == "2 files committed"
    data = lake.read_table(LocalStorage(tmp_path), "book_deltas")
    assert data.schema.field("size").type == DECIMAL and data.num_rows == 20
    assert data["price"].to_pylist() == [Decimal(100 + i) for i in range(10)] * 2
    # still untagged segment files: stale until rebuilt, as any migrated part
    assert [p.built_with for p in lake_upkeep.stale(cfg)] == ["untagged"]
    assert lake_upkeep.migrate(cfg).tables["book_deltas"] == "already a Delta table"


def test_migrate_rewrites_a_delta_table_of_the_older_schema(tmp_path: Path) -> None:
    """A Delta table written when times were int64 ns: commits to it are refused with the
    remedy, `lake migrate` rewrites it in one commit to timestamps, with the same instants."""
    from deltalake import DeltaTable, write_deltalake

    rows = _deltas(0, 10, 0).append_column("exchange", pa.array(["coinbase"] * 10))
    rows = rows.append_column("symbol", pa.array(["BTC-USD"] * 10))
    rows = rows.append_column("date", pa.array([DAY] * 10))
    uri = str(tmp_path / "processed/book_deltas")
    write_deltalake(uri, rows, partition_by=["exchange", "symbol", "date"])
    storage = LocalStorage(tmp_path)
    lk = lake.Lake(storage, LAYOUT)
    new = lk.stage("book_deltas", _deltas(100, 5, 100), "coinbase", "BTC-USD", DAY, "x")
    with pytest.raises(lake.LakeError, match=r"ts_event: int64 -> timestamp.*lake migrate"):
        lk.commit("book_deltas", [new])
    cfg = _cfg(tmp_path)
    report = lake_upkeep.migrate(cfg, dry_run=True).tables["book_deltas"]
    assert report.startswith("1 files would be rewritten to the current types (ts_event: int64")
    assert DeltaTable(uri).schema().fields[0].type.type == "long"
    assert lake_upkeep.migrate(cfg).tables["book_deltas"].startswith("1 files rewritten to the")
    assert DeltaTable(uri).schema().fields[0].type.type == "timestamp"
    back = lake.read_table(storage, "book_deltas")
    assert back["ts_recv"].to_pylist() == rows["ts_recv"].to_pylist()
    assert back["price"].to_pylist() == rows["price"].to_pylist()
    assert lake_upkeep.migrate(cfg).tables["book_deltas"] == "already a Delta table"
    lk = lake.Lake(storage, LAYOUT)
    lk.commit("book_deltas", [new])
    assert lake.read_table(storage, "book_deltas").num_rows == 15
