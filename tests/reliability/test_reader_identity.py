"""Issue case 5: the reader hid rows. For a day present in PostgreSQL it took lake rows only
after the newest hot row, so a late segment (here a second source of the same venue, refined
after the day was loaded into the hot store, its receive times inside the hot rows' range) was
invisible until the next ``hot load``. Now hot and lake rows of a day are merged by identity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from fluxforge.captures import merge_captures
from fluxforge.config import config_from_dict
from fluxforge.hot import load_lake
from fluxforge.query import Reader
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, segment_name
from fluxforge.storage import Layout, LocalStorage
from tests.query.test_hot_cold_routing import DAY_NS, _shift, two_day_lake  # noqa: F401
from tests.reliability.conftest import record_figures

pytestmark = pytest.mark.services


def test_reader_late_segment_rows_not_hidden_by_hot_day(
    two_day_lake,  # noqa: F811 (the fixture imported above)
    pg_db: str,
    captures: Path,
    tmp_path: Path,
) -> None:
    cfg, (_, day2) = two_day_lake
    today = datetime.fromtimestamp(day2 // 10**9, tz=UTC).date()
    assert load_lake(cfg, pg_db, hot_days=1, today=today).days == [today.isoformat()]
    hot_cfg = cfg.model_copy(update={"hot_store": cfg.hot_store.model_copy(update={"dsn": pg_db})})
    start, end = day2 - 3600 * 10**9, day2 + 3 * 3600 * 10**9
    before = Reader(hot_cfg).trades("okx", "BTC-USDT", start, end)

    # a late segment of a second source of the venue: the same hour, new trades (other ids),
    # refined into the lake after the hot load
    recs = [r for r in merge_captures([captures / "OKX" / "OKX.ws.1.0"]) if r.kind == "recv"]
    lines = [
        encode_envelope(r.ts + DAY_NS + 1000, "okx-b", "okx", n, "msg", _shift(r.payload, 7))
        for n, r in enumerate(recs)
    ]
    hour = datetime.fromtimestamp((recs[0].ts + DAY_NS) // 10**9, tz=UTC)
    layout = Layout.of(config_from_dict({}, environ={}).storage.ingestion)
    root = Path(cfg.storage.etl_input.base_dir)
    LocalStorage(root).write_bytes(
        layout.segment("ready", "okx-b", segment_name(hour, 1)), b"".join(lines)
    )
    assert not process_ready(cfg).failed

    lake_only = Reader(cfg).trades("okx", "BTC-USDT", start, end)
    routed = Reader(hot_cfg).trades("okx", "BTC-USDT", start, end)
    late = lake_only.num_rows - before.num_rows
    assert late > 0
    hot_max = pc.max(before["ts_recv"]).as_py()
    hidden_before = pc.sum(pc.less_equal(lake_only["ts_recv"], hot_max)).as_py() - before.num_rows
    assert hidden_before > 0  # late rows inside the hot rows' time range: the old cutoff hid them
    assert routed.num_rows == lake_only.num_rows  # none hidden, none doubled
    assert sorted(zip(routed["seq"].to_pylist(), routed["ts_recv"].to_pylist(), strict=True)) == (
        sorted(zip(lake_only["seq"].to_pylist(), lake_only["ts_recv"].to_pylist(), strict=True))
    )
    record_figures(
        "reader_identity",
        {
            "hot_rows": before.num_rows,
            "late_lake_rows": late,
            "late_rows_inside_hot_range": hidden_before,
            "returned": routed.num_rows,
        },
    )
