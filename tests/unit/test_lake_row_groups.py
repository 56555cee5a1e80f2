"""book_deltas parts have row groups aligned to snapshot windows (book_at reads one window)."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq

from fluxforge.lake import encode_parquet
from fluxforge.tables import BOOK_DELTAS

WINDOW = 60 * 10**9
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ns(when: dt.datetime) -> int:
    """A stored (microsecond) time of the Parquet statistics as ns since the epoch."""
    return (when - EPOCH) // dt.timedelta(microseconds=1) * 1_000


def _deltas(ts: list[int]) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts_event": ts,
            "ts_recv": ts,
            "venue_symbol": ["X"] * n,
            "side": ["bid"] * n,
            "price": pa.array(["1.5"] * n).cast(BOOK_DELTAS.field("price").type),
            "size": pa.array(["2"] * n).cast(BOOK_DELTAS.field("size").type),
            "update_id": list(range(n)),
            "is_snapshot": [False] * n,
            "book_epoch": pa.array([1] * n, pa.int32()),
            "seq": list(range(n)),
        }
    )


def test_encode_parquet_window_splits_row_groups_at_window_boundaries() -> None:
    ts = [i * 7 * 10**9 for i in range(40)]  # 280 s: windows 0..4
    body = encode_parquet(_deltas(ts), BOOK_DELTAS, row_group_size=1000, window_ns=WINDOW)
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    col = meta.schema.names.index("ts_recv")
    windows = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(col).statistics
        assert _ns(stats.min) // WINDOW == _ns(stats.max) // WINDOW
        windows.append(_ns(stats.min) // WINDOW)
    assert windows == [0, 1, 2, 3, 4]
    assert pq.read_table(io.BytesIO(body)).num_rows == 40


def test_encode_parquet_without_window_is_one_row_group_and_deterministic() -> None:
    data = _deltas([i * 7 * 10**9 for i in range(40)])
    body = encode_parquet(data, BOOK_DELTAS, row_group_size=1000)
    assert pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups == 1
    assert body == encode_parquet(data, BOOK_DELTAS, row_group_size=1000)


def test_times_are_stored_as_utc_microsecond_timestamps_and_read_back_as_ns() -> None:
    """In the file: timestamp[us, UTC], floored, "none" (negative) as null. Read back by
    FluxForge: int64 ns again, null as the column's in-memory "none"."""
    from fluxforge.lake import read_file
    from fluxforge.storage import LocalStorage
    from fluxforge.tables import GAP_LEDGER, LAKE_TIME

    ns = 1_704_153_600_123_456_789
    rows = pa.table(
        {
            "channel": ["book", "book"],
            "ts_from": pa.array([ns, -1], pa.int64()),
            "ts_to": pa.array([ns + 210, ns + 1_000], pa.int64()),  # same µs, next µs
            "cause": ["reconnect", "reconnect"],
            "book_epoch": pa.array([1, 2], pa.int32()),
            "detail": [None, None],
            "segment": ["s", "s"],
        }
    )
    body = encode_parquet(rows, GAP_LEDGER, row_group_size=1000)
    stored = pq.read_table(io.BytesIO(body))
    assert stored.schema.field("ts_from").type == LAKE_TIME
    assert stored["ts_from"].to_pylist()[1] is None
    assert _ns(stored["ts_to"][0].as_py()) == ns // 1000 * 1000

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        LocalStorage(tmp).write_bytes("gap_ledger/x.parquet", body)
        back = read_file(LocalStorage(tmp), "gap_ledger/x.parquet", "gap_ledger")
    assert back.schema == GAP_LEDGER
    assert back["ts_from"].to_pylist() == [ns // 1000 * 1000, -1]
    assert back["ts_to"].to_pylist() == [ns // 1000 * 1000, ns // 1000 * 1000 + 1000]


def test_lake_times_of_chunked_ns_with_negatives_and_nulls_floor_and_null_alike() -> None:
    """Both ways of converting times (numpy for plain int64 ns, compute kernels when the
    column holds nulls) floor to microseconds and turn negative ("none") times into null."""
    from fluxforge.tables import GAP_LEDGER, LAKE_TIME, to_lake

    def one(chunks: list[list[int | None]]) -> list[int | None]:
        rows = pa.table({"ts_from": pa.chunked_array(chunks, pa.int64())})
        stored = to_lake(rows, GAP_LEDGER)["ts_from"]
        assert stored.type == LAKE_TIME
        return stored.cast(pa.int64()).to_pylist()

    assert one([[5_999, -1, 0], [-1_000_000, 1_001], []]) == [5, None, 0, None, 1]
    assert one([[None, -5, 2_000], [999]]) == [None, None, 2, 0]


def _many_deltas(n: int) -> pa.Table:
    """n rows of one instrument's book deltas, prices and sizes on a few hundred levels."""
    import numpy as np

    rng = np.random.default_rng(7)
    ts = 1_704_153_600_000_000_000 + np.cumsum(rng.integers(0, 2_000_000, n))
    ticks = pa.array(rng.integers(90_000, 90_500, n) * 10**10).cast(pa.decimal128(38, 0))
    return pa.table(
        {
            "ts_event": ts,
            "ts_recv": ts,
            "venue_symbol": ["BTC-USD"] * n,
            "side": np.where(rng.random(n) < 0.5, "bid", "ask"),
            "price": ticks.cast(BOOK_DELTAS.field("price").type),
            "size": ticks.cast(BOOK_DELTAS.field("size").type),
            "update_id": np.arange(n),
            "is_snapshot": rng.random(n) < 0.01,
            "book_epoch": pa.array(np.ones(n, np.int32)),
            "seq": np.arange(n),
        },
        schema=BOOK_DELTAS,
    )


def test_book_deltas_pages_end_at_the_byte_target_and_every_reader_reads_them(
    tmp_path, monkeypatch
) -> None:
    """A part's data pages end at the writer's byte target, not every 20,000 rows (pyarrow's
    default): fewer pages, so a smaller file. DuckDB, Polars, delta-rs (its own Rust
    reader, through DataFusion) and pyarrow read every row of such a part back exactly."""
    import duckdb
    import polars as pl
    from deltalake import DeltaTable, QueryBuilder

    from fluxforge import lake
    from fluxforge.storage import LocalStorage
    from fluxforge.tables import to_lake

    data = _many_deltas(120_000)
    body = encode_parquet(data, BOOK_DELTAS, row_group_size=128_000)
    with monkeypatch.context() as patch:
        patch.setattr(lake, "PAGE_ROWS", 20_000)
        assert len(body) < len(encode_parquet(data, BOOK_DELTAS, row_group_size=128_000))

    stored = to_lake(data, BOOK_DELTAS)
    path = tmp_path / "part.parquet"
    path.write_bytes(body)
    assert pq.read_table(path).equals(stored)
    by_duckdb = duckdb.sql(f"select * from read_parquet('{path}')").arrow()
    by_duckdb = by_duckdb.read_all() if hasattr(by_duckdb, "read_all") else by_duckdb
    assert by_duckdb.cast(stored.schema).equals(stored)
    assert pl.read_parquet(path).to_arrow().cast(stored.schema).equals(stored)

    lk = lake.Lake(LocalStorage(tmp_path / "lake"))
    staged = lk.stage("book_deltas", data, "coinbase", "BTC-USD", "2024-01-02", "s-seg", 128_000)
    assert lk.commit("book_deltas", [staged])
    query = QueryBuilder().register("t", DeltaTable(lk.uri("book_deltas")))
    by_delta_rs = pa.table(query.execute("select * from t order by seq").read_all())
    assert by_delta_rs.select(stored.schema.names).cast(stored.schema).equals(stored)


def test_string_columns_get_dictionary_pages_only_in_files_of_many_rows(monkeypatch) -> None:
    """A segment's part stores its strings plain (cheaper to write than a dictionary); a file
    of at least ``DICTIONARY_ROWS`` rows (a compacted day) gets dictionary pages for them.
    Times, ids and prices never do. The rows read back are the same either way."""
    from fluxforge import lake

    def encodings(body: bytes) -> dict[str, tuple[str, ...]]:
        meta = pq.ParquetFile(io.BytesIO(body)).metadata
        group = meta.row_group(0)
        return {group.column(i).path_in_schema: group.column(i).encodings for i in range(10)}

    data = _deltas([i * 10**9 for i in range(40)])
    plain = encode_parquet(data, BOOK_DELTAS, row_group_size=1000)
    with monkeypatch.context() as patch:
        patch.setattr(lake, "DICTIONARY_ROWS", 40)
        coded = encode_parquet(data, BOOK_DELTAS, row_group_size=1000)
    assert all("RLE_DICTIONARY" not in e for e in encodings(plain).values())
    for name, used in encodings(coded).items():
        assert ("RLE_DICTIONARY" in used) == (name in ("venue_symbol", "side")), name
    assert pq.read_table(io.BytesIO(plain)).equals(pq.read_table(io.BytesIO(coded)))
