"""`fluxforge plot`: each kind drawn from a lake built from the OKX capture into a real PNG of
the documented size (or an HTML page embedding it)."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from fluxforge.cli import main
from fluxforge.plots import SIZE_PX, latency_bucket_ns, latency_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOOK = ["--exchange", "okx", "--symbol", "BTC/USDT"]
DAY = ["--start", "2022-05-13", "--end", "2022-05-14"]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (the first chunk of every PNG)."""
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("coverage", DAY),
        ("latency", DAY),
        ("bars", [*BOOK, "--start", "2022-05-13T16:00", "--end", "2022-05-13T17:00"]),
        ("book", [*BOOK, "--at", "2022-05-13T16:27:10Z"]),
    ],
)
def test_plot_writes_a_png_of_the_documented_size(
    lake: Path, tmp_path: Path, kind: str, args: list[str]
) -> None:
    out = tmp_path / f"{kind}.png"
    res = CliRunner().invoke(
        main, ["plot", kind, "--config", str(lake), *args, "--output", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert png_size(out.read_bytes()) == SIZE_PX
    assert f"wrote {out}" in res.stderr


def test_plot_html_embeds_the_png(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "coverage.html"
    res = CliRunner().invoke(
        main, ["plot", "coverage", "--config", str(lake), *DAY, "--output", str(out)]
    )
    assert res.exit_code == 0, res.output
    found = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", out.read_text())
    assert found and png_size(base64.b64decode(found.group(1))) == SIZE_PX


def test_plot_outside_the_data_or_wrong_suffix_fails_clearly(lake: Path, tmp_path: Path) -> None:
    empty = CliRunner().invoke(
        main,
        ["plot", "coverage", "--config", str(lake), "--start", "2023-01-01", "--end", "2023-01-02",
         "--output", str(tmp_path / "c.png")],
    )  # fmt: skip
    assert empty.exit_code == 1 and "no coverage rows" in empty.stderr
    assert not (tmp_path / "c.png").exists()
    wrong = CliRunner().invoke(
        main, ["plot", "book", "--config", str(lake), *BOOK, "--at", "2022-05-13T16:27:10Z",
               "--output", str(tmp_path / "b.jpg")],
    )  # fmt: skip
    assert wrong.exit_code == 1 and ".png or .html" in wrong.stderr


def test_latency_buckets_follow_the_span() -> None:
    assert latency_bucket_ns(30 * 10**9) == 10**9
    assert latency_bucket_ns(6 * 3600 * 10**9) == 600 * 10**9
    rows = pa.table(
        {
            "exchange": ["x"] * 4,
            "symbol": ["S"] * 4,
            "ts_event": [0, 10**9, 2 * 10**9, 3 * 10**9],  # 0: no event time, left out
            "ts_recv": [5 * 10**6, 10**9 + 5 * 10**6, 2 * 10**9 + 7 * 10**6, 3 * 10**9 + 9 * 10**6],
        }
    )
    lat = latency_table(rows)
    assert lat["rows"].to_pylist() == [1, 1, 1] and lat["p50_ms"].to_pylist() == [5.0, 7.0, 9.0]


def test_latency_from_feed_stats_is_hourly_per_exchange(lake: Path) -> None:
    from datetime import UTC, date, datetime

    from fluxforge import plotdata
    from fluxforge.config import load_config

    cfg = load_config(lake, environ={})
    day = date(2022, 5, 13)
    lat = plotdata.latency_from_feed_stats(cfg, day, day)
    assert lat is not None, "the refinery writes feed_stats"
    hour = int(datetime(2022, 5, 13, 16, tzinfo=UTC).timestamp()) * 10**9
    assert lat["exchange"].to_pylist() == ["okx"] and lat["bucket_ns"].to_pylist() == [hour]
    rows = plotdata.latency_rows(cfg, day, day)
    with_event = sum(1 for t in rows["ts_event"].to_pylist() if t and t > 0)
    assert 0 < lat["rows"][0].as_py() <= with_event  # messages, not rows, carry a latency
    p50, p99 = lat["p50_ms"][0].as_py(), lat["p99_ms"][0].as_py()
    assert p50 <= p99
    assert plotdata.latency_from_feed_stats(cfg, date(2023, 1, 1), date(2023, 1, 1)) is None
