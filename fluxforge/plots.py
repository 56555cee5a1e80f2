"""Pictures of the data: coverage heatmap, candlesticks with volume, book depth, feed latency.

Drawn with matplotlib's Agg backend (no display needed). Every figure has a fixed size in
pixels (``SIZE_PX``) so documents and the Dagster UI show it the same way. ``save`` writes PNG,
or HTML embedding that PNG (one self-contained file, no JavaScript).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SIZE_PX = (1200, 600)
DPI = 100
KINDS = ("coverage", "bars", "book", "latency")
HOUR_NS = 3_600_000_000_000


class PlotError(ValueError):
    """Nothing to draw, or an output the plots cannot write; the message says which."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _figure(rows: int = 1, height_ratios: list[int] | None = None) -> tuple[Any, Any]:
    plt = _pyplot()
    w, h = SIZE_PX
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(w / DPI, h / DPI),
        dpi=DPI,
        sharex=rows > 1,
        gridspec_kw={"height_ratios": height_ratios} if height_ratios else None,
    )
    return fig, axes


def _dt(ns: np.ndarray) -> np.ndarray:
    return np.asarray(ns, dtype="int64").astype("datetime64[ns]")


# ------------------------------------------------------------------------------ coverage


def coverage_figure(cov: pa.Table, title: str = "coverage") -> Any:
    """Rows per exchange·symbol × UTC hour (``fluxforge.quality.coverage`` rows, channels
    summed), log colour scale; an hour without rows inside the span is a gap (red), an hour
    with gap-ledger rows is marked with an x."""
    if not cov.num_rows:
        raise PlotError("no coverage rows: the lake holds nothing in that range")
    import polars as pl

    df = pl.from_arrow(cov.select(["exchange", "symbol", "hour", "rows", "gaps"]))
    assert isinstance(df, pl.DataFrame)
    df = (
        df.with_columns(
            (pl.col("exchange") + " · " + pl.col("symbol")).alias("key"),
            (pl.col("hour").dt.epoch("s") // 3600).alias("h"),
        )
        .group_by(["key", "h"])
        .agg(pl.col("rows").sum(), pl.col("gaps").sum())
    )
    keys = sorted(df["key"].unique().to_list())
    h0, h1 = int(df["h"].min()), int(df["h"].max())  # type: ignore[arg-type]
    grid = np.zeros((len(keys), h1 - h0 + 1))
    gaps = np.zeros_like(grid)
    index = {k: i for i, k in enumerate(keys)}
    for key, h, rows, ng in df.select(["key", "h", "rows", "gaps"]).iter_rows():
        grid[index[key], h - h0] = rows
        gaps[index[key], h - h0] = ng
    fig, ax = _figure()
    shown = np.ma.masked_where(grid == 0, np.log10(np.maximum(grid, 1)))
    # an hour with no rows: a gap
    cmap = _pyplot().get_cmap("viridis").with_extremes(bad="#d62728")
    img = ax.imshow(shown, aspect="auto", cmap=cmap, interpolation="nearest")
    ys, xs = np.nonzero(gaps)
    ax.scatter(xs, ys, marker="x", color="white", s=40, label="gap-ledger rows")
    ax.set_yticks(range(len(keys)), keys)
    ticks = np.linspace(0, h1 - h0, num=min(h1 - h0 + 1, 12), dtype=int)
    ax.set_xticks(
        ticks,
        [
            datetime.fromtimestamp((h0 + int(t)) * 3600, tz=UTC).strftime("%m-%d %H:00")
            for t in ticks
        ],
        rotation=30,
        ha="right",
    )
    fig.colorbar(img, ax=ax, label="log10 rows per hour")
    legend = [_patch("#d62728", "no rows (gap)")]
    if len(xs):
        legend.append(ax.collections[0])
    ax.legend(handles=legend, loc="upper right", fontsize=8)
    ax.set_title(f"{title}: rows per hour (UTC), trades + quotes + book deltas")
    fig.tight_layout()
    return fig


def _patch(color: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


# ------------------------------------------------------------------------------ bars


def bars_figure(bars: pa.Table, title: str) -> Any:
    """Candlesticks (``fluxforge.query.BARS`` rows) over a volume panel."""
    if not bars.num_rows:
        raise PlotError("no bars in that range")
    ts = bars["ts"].to_numpy()
    o, h, lo, c, v = (
        np.asarray([float(x) for x in bars[name].to_pylist()])
        for name in ("open", "high", "low", "close", "volume")
    )
    step = int(np.min(np.diff(ts))) if len(ts) > 1 else 60_000_000_000
    width = np.timedelta64(int(step * 0.7), "ns")
    x = _dt(ts)
    up = c >= o
    fig, (ax, axv) = _figure(2, [3, 1])
    colors = np.where(up, "#2ca02c", "#d62728")
    ax.vlines(x, lo, h, color=colors, linewidth=1)
    ax.bar(x, np.abs(c - o) + 1e-12, bottom=np.minimum(o, c), width=width, color=colors)
    axv.bar(x, v, width=width, color=colors)
    ax.set_title(title)
    ax.set_ylabel("price")
    axv.set_ylabel("volume")
    axv.set_xlabel("UTC")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ book


def book_figure(doc: dict[str, Any]) -> Any:
    """Cumulative depth of a book document (``fluxforge.render.book_document``)."""
    if not doc["bids"] and not doc["asks"]:
        raise PlotError(f"no book levels at {doc['ts']}")
    fig, ax = _figure()
    for side, color in (("bids", "#2ca02c"), ("asks", "#d62728")):
        levels = doc[side]
        if not levels:
            continue
        px = np.asarray([float(Decimal(p)) for p, _ in levels])
        cum = np.cumsum([float(Decimal(s)) for _, s in levels])
        ax.step(px, cum, where="post", color=color, label=side)
        ax.fill_between(px, cum, step="post", color=color, alpha=0.3)
    state = "valid" if doc["valid"] else "NOT VALID"
    ax.set_title(
        f"{doc['exchange']} {doc['symbol']} book at {doc['ts']} ({state}, {len(doc['bids'])} "
        f"bid / {len(doc['asks'])} ask levels)"
    )
    ax.set_xlabel("price")
    ax.set_ylabel("cumulative size")
    ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ latency


_BUCKETS_NS = (1, 10, 60, 600, 3600, 6 * 3600, 86400)


def latency_bucket_ns(span_ns: int, target: int = 60) -> int:
    """The bucket (1 s .. 1 day) that cuts a span into about `target` points or fewer."""
    for secs in _BUCKETS_NS:
        if span_ns / (secs * 1_000_000_000) <= target:
            return secs * 1_000_000_000
    return _BUCKETS_NS[-1] * 1_000_000_000


def latency_table(rows: pa.Table) -> pa.Table:
    """Receive-minus-event latency (p50, p90, p99 in ms) per exchange and time bucket
    (``bucket_ns`` start; the bucket is chosen from the span, ``latency_bucket_ns``) of rows
    with ``exchange``, ``symbol``, ``ts_event``, ``ts_recv`` (trades and quotes)."""
    import polars as pl

    df = pl.from_arrow(rows.select(["exchange", "symbol", "ts_event", "ts_recv"]))
    assert isinstance(df, pl.DataFrame)
    df = df.filter(pl.col("ts_event") > 0)
    if df.is_empty():
        return df.to_arrow()
    bucket = latency_bucket_ns(int(df["ts_recv"].max()) - int(df["ts_recv"].min()))  # type: ignore[arg-type]
    lat = (
        df.with_columns(
            ((pl.col("ts_recv") - pl.col("ts_event")) / 1e6).alias("ms"),
            (pl.col("ts_recv") // bucket * bucket).alias("bucket_ns"),
        )
        .group_by(["exchange", "bucket_ns"])
        .agg(
            pl.col("ms").quantile(0.5).alias("p50_ms"),
            pl.col("ms").quantile(0.9).alias("p90_ms"),
            pl.col("ms").quantile(0.99).alias("p99_ms"),
            pl.len().alias("rows"),
        )
        .with_columns(pl.lit(bucket).alias("width_ns"))
        .sort(["exchange", "bucket_ns"])
    )
    return lat.to_arrow()


def latency_figure(lat: pa.Table, title: str = "feed latency") -> Any:
    """p50 / p99 receive-minus-event latency per time bucket (`latency_table` rows)."""
    if not lat.num_rows:
        raise PlotError("no rows with an event time in that range")
    fig, ax = _figure()
    exchanges = lat["exchange"].to_numpy(zero_copy_only=False)
    buckets = lat["bucket_ns"].to_numpy()
    for exchange in sorted(set(exchanges)):
        mask = exchanges == exchange
        x = _dt(buckets[mask])
        (line,) = ax.plot(x, lat["p50_ms"].to_numpy()[mask], marker="o", label=f"{exchange} p50")
        ax.plot(
            x, lat["p99_ms"].to_numpy()[mask], marker=".", linestyle="--",
            color=line.get_color(), label=f"{exchange} p99",
        )  # fmt: skip
    ax.set_yscale("symlog")
    ax.set_ylabel("receive - event time (ms)")
    width_s = int(lat["width_ns"][0].as_py()) // 1_000_000_000
    ax.set_xlabel(f"UTC, buckets of {width_s} s")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ files


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buf.getvalue()


def save(fig: Any, output: str | Path, title: str = "FluxForge") -> Path:
    """Write `fig` as ``.png``, or ``.html`` holding the PNG inline; returns the path."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise PlotError(f"--output {path.name}: use a .png or .html file name")
    png = png_bytes(fig)
    if suffix == ".png":
        path.write_bytes(png)
    else:
        data = base64.b64encode(png).decode()
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'></body></html>\n",
            encoding="utf-8",
        )
    return path
