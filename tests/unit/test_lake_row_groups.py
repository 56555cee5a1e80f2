"""book_deltas parts have row groups aligned to snapshot windows (book_at reads one window)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from fluxforge.lake import encode_parquet
from fluxforge.tables import BOOK_DELTAS

WINDOW = 60 * 10**9


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
        assert stats.min // WINDOW == stats.max // WINDOW
        windows.append(stats.min // WINDOW)
    assert windows == [0, 1, 2, 3, 4]
    assert pq.read_table(io.BytesIO(body)).num_rows == 40


def test_encode_parquet_without_window_is_one_row_group_and_deterministic() -> None:
    data = _deltas([i * 7 * 10**9 for i in range(40)])
    body = encode_parquet(data, BOOK_DELTAS, row_group_size=1000)
    assert pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups == 1
    assert body == encode_parquet(data, BOOK_DELTAS, row_group_size=1000)
