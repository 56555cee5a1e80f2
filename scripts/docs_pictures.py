"""Draw the pictures of docs/data-guide.md into docs/img/.

Run: ``uv run --frozen python scripts/docs_pictures.py`` (needs the captures).

- coverage: the five exchange captures replayed into hours of one day (receive times shifted by
  whole hours; 03:00 left out of two of them to show a gap), processed into a lake;
- book: the OKX capture's book at 16:27:10Z;
- latency: the Coinbase and Kraken captures (both 2021-04-17), receive minus event time;
- bars: one trading day of seeded synthetic trades (the captures hold under a minute each).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import yaml
from click.testing import CliRunner

from fluxforge import plots
from fluxforge.captures import merge_captures
from fluxforge.cli import main
from fluxforge.config import config_from_dict
from fluxforge.refinery import process_ready
from fluxforge.segments import encode_envelope, frame_payload, segment_name
from fluxforge.storage import Layout, LocalStorage
from fluxforge.tables import DECIMAL

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "img"
CAPTURES = Path(os.environ.get("FLUXFORGE_CAPTURES", REPO.parent / "shared" / "data" / "captures"))
# (source, exchange id, capture files): the exchange ids the venues' normalizers expect
FEEDS = {
    "coinbase": ("coinbase", ["COINBASE/COINBASE.ws.28.0"]),
    "kraken": ("kraken", ["KRAKEN/KRAKEN.ws.50.0"]),
    "okx": ("okx", ["OKX/OKX.ws.1.0"]),
    "bitget": ("bitget", ["BITGET/BITGET.ws.2.0"]),
    "binance": ("binanceusdm", ["BINANCE_FUTURES/BINANCE_FUTURES.ws.1.0"]),
}
HOUR_NS = 3_600_000_000_000


def build_lake(base: Path, feeds: dict[str, tuple[str, list[str]]], hours: dict[str, list[int]]):
    """Each feed's capture written as one segment per target hour of 2024-03-01 (receive times
    shifted there), or unshifted when `hours` has no entry; then processed."""
    data = {
        "storage": {"backend": "local", "base_dir": str(base)},
        "hot_store": {"embedded": False},
    }
    cfg = config_from_dict(data, environ={})
    layout, storage = Layout.of(cfg.storage.ingestion), LocalStorage(base)
    day0 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 10**9
    for source, (exchange, files) in feeds.items():
        recs = [r for r in merge_captures([CAPTURES / f for f in files]) if r.kind == "recv"]
        first = recs[0].ts
        for n, hour in enumerate(hours.get(source, [None]), 1):
            shift = 0 if hour is None else day0 + hour * HOUR_NS - first + 60 * 10**9
            lines = [
                encode_envelope(r.ts + shift, source, exchange, i, "msg", frame_payload(r.payload))
                for i, r in enumerate(recs, 1 + n * len(recs))
            ]
            ts = datetime.fromtimestamp((first + shift) // 10**9, tz=UTC)
            storage.write_bytes(
                layout.segment("ready", source, segment_name(ts, n)), b"".join(lines)
            )
    report = process_ready(cfg)
    assert not report.failed, report.failed
    path = base / "fluxforge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def synthetic_bars() -> pa.Table:
    """1-hour-ish candles of a seeded random walk (15-minute bars over one day)."""
    rng = random.Random(7)
    px, rows = 62000.0, []
    t = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 10**9
    step = 15 * 60 * 10**9
    for _ in range(96):
        o = px
        path = [o]
        for _ in range(30):
            px *= 1 + rng.gauss(0, 0.0008)
            path.append(px)
        rows.append((t, o, max(path), min(path), px, abs(rng.gauss(40, 15)), rng.randint(200, 900)))
        t += step

    def dec(values):
        return pa.array([Decimal(f"{v:.2f}") for v in values], DECIMAL)

    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "ts": pa.array(cols[0], pa.int64()),
            "open": dec(cols[1]),
            "high": dec(cols[2]),
            "low": dec(cols[3]),
            "close": dec(cols[4]),
            "volume": dec(cols[5]),
            "vwap": pa.array([float(c) for c in cols[4]]),
            "trade_count": pa.array(cols[6], pa.int64()),
        }
    )


def cli(*args: str) -> None:
    res = CliRunner().invoke(main, list(args))
    if res.exit_code:
        sys.exit(f"fluxforge {' '.join(args)}: {res.output}")


def main_() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        hours = {
            s: [h for h in range(8) if not (h == 3 and s in ("kraken", "bitget"))] for s in FEEDS
        }
        shifted = build_lake(Path(tmp) / "shifted", FEEDS, hours)
        cli("plot", "coverage", "--config", str(shifted), "--start", "2024-03-01", "--end",
            "2024-03-02", "--output", str(OUT / "coverage.png"))  # fmt: skip
        real = build_lake(
            Path(tmp) / "real", {k: FEEDS[k] for k in ("coinbase", "kraken", "okx")}, {}
        )
        at = "2022-05-13T16:27:10Z"
        cli("plot", "book", "--config", str(real), "--exchange", "okx", "--symbol", "BTC-USDT",
            "--at", at, "--depth", "100", "--output", str(OUT / "book.png"))  # fmt: skip
        cli("plot", "latency", "--config", str(real), "--start", "2021-04-17", "--end",
            "2021-04-18", "--output", str(OUT / "latency.png"))  # fmt: skip
    fig = plots.bars_figure(
        synthetic_bars(), "synthetic BTC-USDT, 15-minute bars (seeded random walk)"
    )
    plots.save(fig, OUT / "bars.png")
    print(
        f"wrote {', '.join(sorted(p.name for p in OUT.glob('*.png')))} to {OUT.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main_()
