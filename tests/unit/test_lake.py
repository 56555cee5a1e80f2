"""lake: deterministic zstd parts, hive read-back, replace-not-append, schema validation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxforge import lake
from fluxforge.config import PathNames
from fluxforge.schemas import SchemaViolation, validate
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import DECIMAL, TRADES

LAYOUT = Layout(PathNames())


def _trades(n: int, price: str = "1.25") -> pa.Table:
    return pa.table(
        {
            "ts_event": pa.array(range(n), pa.int64()),
            "ts_recv": pa.array(range(n), pa.int64()),
            "venue_symbol": ["BTCUSD"] * n,
            "trade_id": [str(i) for i in range(n)],
            "price": pa.array([price] * n).cast(DECIMAL),
            "size": pa.array(["0.5"] * n).cast(DECIMAL),
            "side": ["buy"] * n,
            "seq": pa.array(range(n), pa.int64()),
        }
    )


def test_lake_stage_is_zstd_deterministic_and_invisible_until_committed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    lk = lake.Lake(storage, LAYOUT)
    staged = lk.stage("trades", _trades(5), "coinbase", "BTC-USD", "2024-01-02", "s-seg_1", 2)
    assert staged.key.startswith(
        "processed/trades/exchange=coinbase/symbol=BTC-USD/date=2024-01-02/part-s-seg_1-v"
    )
    meta = pq.ParquetFile(tmp_path / staged.key).metadata
    assert meta.num_row_groups == 3
    assert meta.row_group(0).column(0).compression == "ZSTD"
    again = lk.stage("trades", _trades(5), "coinbase", "BTC-USD", "2024-01-02", "s-seg_1", 2)
    assert again.key == staged.key and (tmp_path / staged.key).stat().st_size == staged.size
    # written but not committed: no reader sees it
    assert lake.read_table(storage, "trades").num_rows == 0
    assert lk.commit("trades", [staged])
    assert lake.read_table(storage, "trades").num_rows == 5
    assert (tmp_path / "processed/trades/_delta_log").is_dir()


def test_a_staged_file_torn_by_a_crash_is_invisible_and_the_retry_writes_it_whole(
    tmp_path: Path,
) -> None:
    """Staged files are written in place inside a ``durable_batch``: a crash can leave one
    torn under its final name. No commit names it (readers go through the log), and the
    retry, staging the same rows under the same name, replaces it whole."""
    storage = LocalStorage(tmp_path)
    lk = lake.Lake(storage, LAYOUT)
    args = ("trades", _trades(5), "coinbase", "BTC-USD", "2024-01-02", "s-seg_1", 2)
    name_only = lk.stage(*args, write=False)
    torn = tmp_path / name_only.key
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"PAR1 torn")
    assert lake.read_table(storage, "trades").num_rows == 0
    with storage.durable_batch():
        staged = lk.stage(*args)
    assert staged == name_only
    assert pq.read_table(torn).num_rows == 5 and torn.stat().st_size == staged.size
    assert lk.commit("trades", [staged])
    assert lake.read_table(storage, "trades").num_rows == 5


def test_file_stats_from_the_parquet_footer_equal_the_computed_ones() -> None:
    """The log's statistics read from the writer's footer (several row groups, nulls, a
    column null in one group and all of another, times, negative decimals, non-ASCII
    strings, booleans) are the ones computed from the rows."""
    from fluxforge.tables import BOOK_DELTAS, to_lake

    n = 7
    rows = pa.table(
        {
            "ts_event": pa.array([5_000_123_456, -1, 3_000_000_999, 9_999_999_999, 1, 2, 4]),
            "ts_recv": pa.array(range(10_000, 10_000 + n), pa.int64()),
            "venue_symbol": ["B", "A", "C", "B", "B", "Zé", "Ω"],
            "side": ["bid", "ask"] * 3 + ["bid"],
            "price": pa.array(["1.5", "0.000000000001", "99", "-7.25", "3", "-2", "1"]).cast(
                DECIMAL
            ),
            "size": pa.array([None, None, "2", "1", None, None, None]).cast(DECIMAL),
            "update_id": pa.array([3, 1, 2, 9, 8, 7, 6], pa.int64()),
            "is_snapshot": [False, True, False, False, False, False, False],
            "book_epoch": pa.array([1, 1, 2, 2, 2, 3, 3], pa.int32()),
            "seq": pa.array([None, 1, 2, 3, 4, 5, 6], pa.int64()),
        }
    )
    body = lake.encode_parquet(rows, BOOK_DELTAS, 2)
    stored = to_lake(rows.cast(BOOK_DELTAS), BOOK_DELTAS)
    footer = pq.ParquetFile(pa.BufferReader(body)).metadata
    assert footer.num_row_groups == 4
    assert lake.file_stats(stored, footer) == lake.file_stats(stored)
    # the stored -1 ("none") is null, and the times keep their microseconds
    assert '"ts_event":"1970-01-01T00:00:00.000000Z"' in lake.file_stats(stored, footer)
    assert '"ts_event":"1970-01-01T00:00:09.999999Z"' in lake.file_stats(stored, footer)


def test_lake_app_transaction_publishes_a_segment_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    lk = lake.Lake(storage, LAYOUT)
    first = lk.stage("trades", _trades(3), "coinbase", "BTC-USD", "2024-01-02", "src-a", 1000)
    assert lk.commit("trades", [first], app=("fluxforge/src", 10))
    # a retry of the same segment (same app version) or of an older one commits nothing
    assert not lk.commit("trades", [first], app=("fluxforge/src", 10))
    assert not lk.commit("trades", [first], app=("fluxforge/src", 7))
    assert lake.read_table(storage, "trades").num_rows == 3
    assert lk.transaction_version("trades", "fluxforge/src") == 10
    # another source has its own app id
    other = lk.stage("trades", _trades(2), "coinbase", "BTC-USD", "2024-01-02", "src-b", 1000)
    assert lk.commit("trades", [other], app=("fluxforge/other", 1))
    assert lake.read_table(storage, "trades").num_rows == 5


def test_lake_commit_after_asking_reads_the_log_once_and_still_sees_concurrent_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit that follows ``transaction_version`` of its app id uses the handle that
    answered, without a second refresh; commits that landed in between are still seen by
    Delta's commit protocol: another source's is appended beside ours, one of the same app
    id fails our commit, and the re-read log then decides (skip: the segment is published;
    retry: ours is newer). Every row is published exactly once."""
    from deltalake import DeltaTable

    storage = LocalStorage(tmp_path)
    mine, other = lake.Lake(storage, LAYOUT), lake.Lake(storage, LAYOUT)
    mine.ensure("trades")
    refreshes = []
    real = DeltaTable.update_incremental
    monkeypatch.setattr(DeltaTable, "update_incremental", lambda h: refreshes.append(1) or real(h))

    def part(stem: str, n: int) -> lake.Staged:
        return mine.stage("trades", _trades(n), "coinbase", "BTC-USD", "2024-01-02", stem, 1000)

    # another source commits between our question and our commit: both land
    assert mine.transaction_version("trades", "fluxforge/a") is None
    refreshes.clear()
    assert other.commit("trades", [part("b-1", 2)], app=("fluxforge/b", 1))
    assert mine.commit("trades", [part("a-1", 3)], app=("fluxforge/a", 1))
    assert refreshes == []  # the other Lake opened its own; ours was not read again
    assert lake.read_table(storage, "trades").num_rows == 5
    # the same app id publishes segment 2 meanwhile (a broken lock): our commit of segment 2
    # fails against it and the re-read log says it is published: nothing is added twice
    assert mine.transaction_version("trades", "fluxforge/a") == 1
    assert other.commit("trades", [part("a-2", 4)], app=("fluxforge/a", 2))
    assert mine.commit("trades", [part("a-2", 4)], app=("fluxforge/a", 2))
    assert lake.read_table(storage, "trades").num_rows == 9
    # ... or an older one: ours (segment 4) fails against it, then lands on the re-read log
    assert mine.transaction_version("trades", "fluxforge/a") == 2
    assert other.commit("trades", [part("a-3", 1)], app=("fluxforge/a", 3))
    assert mine.commit("trades", [part("a-4", 6)], app=("fluxforge/a", 4))
    assert lake.read_table(storage, "trades").num_rows == 16
    assert mine.transaction_version("trades", "fluxforge/a") == 4
    refreshes.clear()
    assert not mine.commit("trades", [part("a-4", 6)], app=("fluxforge/a", 4))  # a retry
    assert refreshes == []
    # a commit without a question right before it reads the log first, as always
    assert not mine.commit("trades", [part("a-4", 6)], app=("fluxforge/a", 4))
    assert refreshes == [1]
    assert lake.read_table(storage, "trades").num_rows == 16


def test_lake_replacing_commit_and_time_travel(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key, _ = lake.write_part(
        storage, LAYOUT, "trades", "coinbase", "BTC-USD", "2024-01-02", "s", _trades(4), 1000
    )
    version_before = lake.Lake(storage, LAYOUT).table("trades").version()
    key2, _ = lake.write_part(
        storage,
        LAYOUT,
        "trades",
        "coinbase",
        "BTC-USD",
        "2024-01-02",
        "s",
        _trades(2, price="2"),
        1000,
    )
    assert key2 != key  # committed files are never rewritten in place
    now = lake.read_table(storage, "trades")
    assert now.num_rows == 2 and now.column("price")[0].as_py() == Decimal("2")
    old = lake.read_table(storage, "trades", as_of=version_before)
    assert old.num_rows == 4 and old.column("price")[0].as_py() == Decimal("1.25")
    assert lake.list_parts(storage, "trades") == [key2]
    with pytest.raises(lake.LakeError, match="as-of"):
        lake.parse_as_of("yesterday-ish")


def test_lake_read_table_adds_hive_columns_and_filters(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for ex, sym, date, stem in [
        ("coinbase", "BTC-USD", "2024-01-02", "a"),
        ("coinbase", "BTC-USD", "2024-01-02", "b"),
        ("coinbase", "ETH-USD", "2024-01-02", "a"),
        ("kraken", "BTC-USD", "2024-01-03", "a"),
    ]:
        lake.write_part(storage, LAYOUT, "trades", ex, sym, date, stem, _trades(2), 1000)
    everything = lake.read_table(storage, "trades")
    assert everything.num_rows == 8
    assert everything.column_names == [*TRADES.names, "exchange", "symbol", "date"]
    btc = lake.read_table(storage, "trades", exchange="coinbase", symbol="BTC-USD")
    assert btc.num_rows == 4 and set(btc.column("date").to_pylist()) == {"2024-01-02"}
    assert lake.read_table(storage, "trades", date="2024-01-03").column("exchange").to_pylist() == [
        "kraken",
        "kraken",
    ]
    assert btc.column("price")[0].as_py() == Decimal("1.25")
    ranged = lake.read_table(storage, "trades", dates=("2024-01-03", "2024-01-09"))
    assert ranged.num_rows == 2
    parts = {
        (p.exchange, p.symbol, p.date): (p.files, p.rows)
        for p in lake.partitions(storage, "trades")
    }
    assert parts == {
        ("coinbase", "BTC-USD", "2024-01-02"): (2, 4),
        ("coinbase", "ETH-USD", "2024-01-02"): (1, 2),
        ("kraken", "BTC-USD", "2024-01-03"): (1, 2),
    }


def test_lake_read_table_empty_has_schema(tmp_path: Path) -> None:
    empty = lake.read_table(LocalStorage(tmp_path), "quotes")
    assert empty.num_rows == 0 and "bid_px" in empty.column_names and "date" in empty.column_names


def test_lake_path_traversal_parts_stay_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    storage = LocalStorage(root)
    key, _ = lake.write_part(
        storage, LAYOUT, "trades", "../..", "../../etc", "2024-01-02", "../x", _trades(1), 1000
    )
    written = (root / key).resolve()
    assert written.is_file() and root.resolve() in written.parents
    assert [p for p in tmp_path.rglob("*.parquet") if root not in p.parents] == []


def test_schemas_reject_negative_price_naming_partition() -> None:
    bad = _trades(1).set_column(4, "price", pa.array(["-1"]).cast(DECIMAL))
    with pytest.raises(SchemaViolation, match="trades exchange=coinbase symbol=BTC-USD"):
        validate("trades", bad, "coinbase", "BTC-USD", "2024-01-02")


def test_schemas_accept_valid_part_and_reject_bad_date() -> None:
    validate("trades", _trades(3), "coinbase", "BTC-USD", "2024-01-02")
    with pytest.raises(SchemaViolation, match="date"):
        validate("trades", _trades(1), "coinbase", "BTC-USD", "yesterday")


def test_schemas_validate_parts_names_the_failing_partition() -> None:
    from fluxforge.schemas import validate_parts

    good = (_trades(2), "coinbase", "BTC-USD", "2024-01-02")
    bad = (_trades(1, price="-2"), "kraken", "ETH-USD", "2024-01-02")
    validate_parts("trades", [good, good])
    with pytest.raises(SchemaViolation, match="trades exchange=kraken symbol=ETH-USD"):
        validate_parts("trades", [good, bad])


def test_schemas_cover_every_lake_table() -> None:
    from fluxforge.schemas import SCHEMAS as PANDERA
    from fluxforge.tables import PARTITION_COLUMNS, SCHEMAS

    assert set(PANDERA) == set(SCHEMAS)
    for name, arrow in SCHEMAS.items():
        assert set(PANDERA[name].columns) == set(arrow.names) | set(PARTITION_COLUMNS), name


def test_lake_storage_options_map_s3_settings_onto_delta_rs_client() -> None:
    """attempts -> retries after the first; timeouts as milliseconds; botocore's read timeout
    (per wait for bytes) is never made the bound on a whole request, only a floor of it."""
    from fluxforge.config import S3Settings
    from fluxforge.storage.s3 import S3Storage

    settings = S3Settings(
        endpoint_url="http://127.0.0.1:9", region="r", max_attempts=4, connect_timeout_s=1.5,
        read_timeout_s=0.5,
    )  # fmt: skip
    opts = lake.storage_options(S3Storage("b", settings))
    assert opts["max_retries"] == "3"
    assert opts["connect_timeout"] == "1500ms"
    assert opts["timeout"] == f"{round(lake.REQUEST_TIMEOUT_S * 1000)}ms"
    assert opts["aws_conditional_put"] == "etag"
    slow = settings.model_copy(update={"read_timeout_s": 120.0})
    assert lake.storage_options(S3Storage("b", slow))["timeout"] == "120000ms"
    assert lake.storage_options(LocalStorage(".")) == {}


def test_to_lake_gives_the_same_rows_whatever_the_input_schema_metadata() -> None:
    """Rows exactly in a table's schema take ``to_lake``'s planned path (the stored schema
    known per schema); rows with other metadata the generic one: same rows, same types."""
    from fluxforge.tables import SCHEMAS, lake_schema, time_columns, to_lake

    for name, schema in SCHEMAS.items():
        times = set(time_columns(schema))
        columns = [
            pa.array([5_000_123_456, -1, 7], pa.int64()) if f.name in times else pa.nulls(3, f.type)
            for f in schema
        ]
        rows = pa.Table.from_arrays(columns, schema=schema)
        planned = to_lake(rows, schema)
        generic = to_lake(rows.replace_schema_metadata({"other": "metadata"}), schema)
        assert planned.schema.equals(lake_schema(schema), check_metadata=True), name
        assert planned.equals(generic) and planned.schema.equals(generic.schema), name
        for column in times:
            assert planned[column].cast(pa.int64()).to_pylist() == [5_000_123, None, 0], name


def test_file_stats_from_the_footer_find_each_column_past_nested_ones() -> None:
    """The footer's bounds are read from each statistics column's own column chunk: a
    struct, a list or a map before it holds several chunks (one per leaf), so the chunk is
    not at the column's index. Both ways of computing the statistics agree."""
    import io

    rows = pa.table(
        {
            "nested": pa.array([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, None]),
            "seq": pa.array([7, -3, 5], pa.int64()),
            "levels": pa.array([[1, 2], None, [3]], pa.list_(pa.int32())),
            "mapped": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
            "name": ["b", "a", "Ω"],
            "ts": pa.array([1, 2, 3], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "price": pa.array(["1.5", "-2", None]).cast(DECIMAL),
        }
    )
    sink = io.BytesIO()
    pq.write_table(rows, sink, row_group_size=2)
    footer = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
    assert footer.num_row_groups == 2 and footer.row_group(0).num_columns == 9
    assert lake.file_stats(rows, footer) == lake.file_stats(rows)
    stats = orjson.loads(lake.file_stats(rows, footer))
    assert stats["minValues"]["seq"] == -3 and stats["maxValues"]["name"] == "Ω"


def test_a_new_table_checkpoints_every_20_commits(tmp_path: Path) -> None:
    """Opening a table reads its last checkpoint plus every commit after it, once per table
    and segment: the lake's tables checkpoint every 20 commits (docs/performance.md,
    "Checkpoint interval"), and delta-rs writes that checkpoint itself."""
    storage = LocalStorage(tmp_path)
    lk = lake.Lake(storage, LAYOUT)
    handle = lk.ensure("trades")
    assert handle.metadata().configuration["delta.checkpointInterval"] == "20"
    log = tmp_path / "processed/trades/_delta_log"
    for i in range(1, 21):
        part = lk.stage("trades", _trades(2), "coinbase", "BTC-USD", "2024-01-02", f"s-{i}", 10)
        assert lk.transaction_version("trades", "fluxforge/a") == (i - 1 or None)
        assert lk.commit("trades", [part], app=("fluxforge/a", i))
        # every 20 versions, counting the table's creation (version 0): at 19, 39, ...
        assert (log / f"{i:020d}.checkpoint.parquet").exists() == (i == 19)
    assert lake.read_table(storage, "trades").num_rows == 40


def _config_commits(handle) -> list[dict]:
    return [c for c in handle.history() if c.get("fluxforge.operation") == "table-config"]


def test_an_older_table_is_given_the_checkpoint_interval_once(tmp_path: Path) -> None:
    """A table an older FluxForge created (a checkpoint every 100 commits, or no setting) is
    given ``TABLE_CONFIG`` by its next writer, in one commit, whichever way that writer
    comes (a segment's question then commit, or ``ensure``); later writers and runs leave it
    as it is, and publication stays exactly-once across the upgrade."""
    from deltalake import DeltaTable

    storage = LocalStorage(tmp_path)
    for table, config in (("trades", {"delta.checkpointInterval": "100"}), ("quotes", None)):
        DeltaTable.create(
            lake.Lake(storage, LAYOUT).uri(table),
            schema=lake.table_schema(table),
            partition_by=["exchange", "symbol", "date"],
            configuration=config,
        )

    def part(lk: lake.Lake, stem: str) -> lake.Staged:
        return lk.stage("trades", _trades(3), "coinbase", "BTC-USD", "2024-01-02", stem, 10)

    # a segment's way: the question, then the commit on the handle that answered
    first = lake.Lake(storage, LAYOUT)
    assert first.transaction_version("trades", "fluxforge/a") is None
    assert first.commit("trades", [part(first, "a-1")], app=("fluxforge/a", 1))
    assert not first.commit("trades", [part(first, "a-1")], app=("fluxforge/a", 1))  # a retry
    # a later run, and ``ensure``: nothing more to set
    second = lake.Lake(storage, LAYOUT)
    second.ensure("trades")
    assert second.transaction_version("trades", "fluxforge/a") == 1
    assert not second.commit("trades", [part(second, "a-1")], app=("fluxforge/a", 1))
    assert second.commit("trades", [part(second, "a-2")], app=("fluxforge/a", 2))
    trades = lake.Lake(storage, LAYOUT).table("trades")
    assert trades.metadata().configuration["delta.checkpointInterval"] == "20"
    assert len(_config_commits(trades)) == 1
    # create (v0), the setting (v1), segments 1 and 2
    assert trades.version() == 3 and trades.transaction_version("fluxforge/a") == 2
    assert lake.read_table(storage, "trades").num_rows == 6
    # a table without the setting, through ``ensure``; a reader alone never writes
    assert (
        "delta.checkpointInterval"
        not in lake.Lake(storage, LAYOUT).table("quotes").metadata().configuration
    )
    assert lake.read_table(storage, "quotes").num_rows == 0
    quotes = lake.Lake(storage, LAYOUT).ensure("quotes")
    assert quotes.metadata().configuration == lake.TABLE_CONFIG
    assert len(_config_commits(quotes)) == 1
    lake.Lake(storage, LAYOUT).ensure("quotes")
    assert len(_config_commits(lake.Lake(storage, LAYOUT).table("quotes"))) == 1


def test_a_concurrent_writer_setting_the_checkpoint_interval_first(tmp_path: Path) -> None:
    """Two writers of an older table: the other one sets the interval (and commits) between
    our question and our commit. Ours finds the setting there on the re-read log instead of
    committing it twice, then commits its segment: one setting, every row once."""
    from deltalake import DeltaTable

    storage = LocalStorage(tmp_path)
    mine, other = lake.Lake(storage, LAYOUT), lake.Lake(storage, LAYOUT)
    DeltaTable.create(
        mine.uri("trades"),
        schema=lake.table_schema("trades"),
        partition_by=["exchange", "symbol", "date"],
        configuration={"delta.checkpointInterval": "100"},
    )
    ours = mine.stage("trades", _trades(3), "coinbase", "BTC-USD", "2024-01-02", "a-1", 10)
    theirs = other.stage("trades", _trades(2), "coinbase", "BTC-USD", "2024-01-02", "b-1", 10)
    assert mine.transaction_version("trades", "fluxforge/a") is None
    assert other.commit("trades", [theirs], app=("fluxforge/b", 1))
    assert mine.commit("trades", [ours], app=("fluxforge/a", 1))
    assert not mine.commit("trades", [ours], app=("fluxforge/a", 1))
    handle = lake.Lake(storage, LAYOUT).table("trades")
    assert len(_config_commits(handle)) == 1 and handle.version() == 3
    assert handle.metadata().configuration["delta.checkpointInterval"] == "20"
    assert lake.read_table(storage, "trades").num_rows == 5
