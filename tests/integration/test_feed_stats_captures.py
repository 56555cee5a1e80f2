"""feed_stats on the real captures: the per-hour latency statistics the refinery writes equal
the ones recomputed here straight from the raw envelopes (the segment lines the daemon wrote),
with each venue's event time read independently of the normalizers; an hour cut into many
segments merges to the same counts and to quantiles within the histogram's resolution."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from replayed import config, replay

from fluxforge import feed_stats
from fluxforge.config import load_config
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage

pytestmark = pytest.mark.slow

HOUR_NS = 3_600_000_000_000


def _iso_ns(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))


def _event(ex: str, msg: object) -> tuple[str, str, int | None] | None:
    """(symbol, channel, venue event time or None) of one received payload, None when the
    line makes no rows; from the venues' documented fields (docs/integrity.md)."""
    if ex == "coinbase" and isinstance(msg, dict):
        kind = msg.get("type")
        channel = {
            "snapshot": "book",
            "l2update": "book",
            "ticker": "quotes",
            "match": "trades",
            "last_match": "trades",
        }.get(kind)
        if channel is None:
            return None
        time = msg.get("time")
        return msg["product_id"], channel, None if time is None else _iso_ns(time)
    if ex == "okx" and isinstance(msg, dict) and "data" in msg:
        channel = {"books": "book", "trades": "trades", "tickers": "quotes"}[msg["arg"]["channel"]]
        return msg["arg"]["instId"], channel, max(int(d["ts"]) for d in msg["data"]) * 1_000_000
    return None


def _expected(segments: list[Path], exchanges: set[str]) -> dict[tuple, dict]:
    per: dict[tuple, dict] = defaultdict(lambda: {"messages": 0, "lat": []})
    for seg in segments:
        for line in seg.read_bytes().splitlines():
            env = orjson.loads(line)
            if env["ex"] not in exchanges or env["kind"] != "msg":
                continue
            found = _event(env["ex"], env["data"])
            if found is None:
                continue
            symbol, channel, ts_event = found
            key = (env["ex"], symbol, channel, env["ts"] // HOUR_NS * 3600)
            per[key]["messages"] += 1
            if ts_event is not None:
                per[key]["lat"].append(env["ts"] - ts_event)
    return per


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, captures: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("feeds")
    inputs = root / "captures"
    for name in ("COINBASE", "OKX"):
        (inputs / name).mkdir(parents=True)
        for f in (captures / name).iterdir():
            (inputs / name / f.name).write_bytes(f.read_bytes())
    cfg_path = replay(root, str(inputs / "*" / "*"))
    segments = sorted((root / "data/raw/ready/replay").glob("segment_*.ndjson"))
    copies = root / "segments"
    copies.mkdir()
    for seg in segments:
        (copies / seg.name).write_bytes(seg.read_bytes())
    assert process_ready(load_config(cfg_path, environ={})).failed == []
    return root, copies


def test_feed_stats_latency_quantiles_equal_recomputed_from_raw_envelopes(processed) -> None:
    root, segments = processed
    table = feed_stats.read(LocalStorage(root / "data"))
    got = {
        (r["exchange"], r["symbol"], r["channel"], int(r["hour"].timestamp())): r
        for r in table.to_pylist()
        if r["channel"] != "control"
    }
    control = [r for r in table.to_pylist() if r["channel"] == "control"]
    # the replayed connection opened once per venue (Coinbase, OKX): one connect record each
    assert sorted((r["exchange"], r["symbol"], r["reconnects"]) for r in control) == [
        ("coinbase", "_all", 1),
        ("okx", "_all", 1),
    ]
    expected = _expected(sorted(segments.glob("*.ndjson")), {"coinbase", "okx"})
    assert set(got) == set(expected)
    assert len(expected) >= 30 + 3  # 10 Coinbase products x 3 channels, OKX BTC-USDT x 3
    for key, exp in expected.items():
        row = got[key]
        lat = np.array(exp["lat"], dtype=np.int64)
        assert row["messages"] == exp["messages"], key
        assert row["latency_messages"] == len(lat), key
        assert row["quantiles_exact"] and row["segments"] == 1, key
        p50, p90, p99 = np.rint(np.quantile(lat, [0.5, 0.9, 0.99])).astype(np.int64)
        assert (row["latency_p50_ns"], row["latency_p90_ns"], row["latency_p99_ns"]) == (
            p50,
            p90,
            p99,
        ), key
        assert row["latency_max_ns"] == lat.max() and row["clock_offset_ns"] == lat.min(), key
        assert row["negative_latency"] == int((lat < 0).sum()), key
        assert row["gaps"] == 0 and row["reconnects"] == 1, key
        assert 0 <= row["silent_minutes"] <= 59, key
    # Coinbase's level2 clock ran ~13 ms ahead of the recorder's: most book latencies < 0
    book = got[("coinbase", "SKL-USD", "book", next(iter(expected))[3])]
    assert book["clock_offset_ns"] < 0 and book["negative_share"] > 0.5


def test_feed_stats_hour_split_into_many_segments_merges_to_the_same_figures(
    processed, tmp_path: Path
) -> None:
    root, segments = processed
    whole = {
        (r["exchange"], r["symbol"], r["channel"], r["hour"]): r
        for r in feed_stats.read(LocalStorage(root / "data")).to_pylist()
    }
    cfg_path = config(tmp_path, "unused")
    ready = tmp_path / "data/raw/ready/replay"
    ready.mkdir(parents=True)
    counter = 0
    for seg in sorted(segments.glob("*.ndjson")):
        hour = seg.name.split("_")[1]
        lines = seg.read_bytes().splitlines(keepends=True)
        for i in range(0, len(lines), 700):
            counter += 1
            (ready / f"segment_{hour}_{counter:05d}.ndjson").write_bytes(
                b"".join(lines[i : i + 700])
            )
    assert process_ready(load_config(cfg_path, environ={})).failed == []
    split = {
        (r["exchange"], r["symbol"], r["channel"], r["hour"]): r
        for r in feed_stats.read(LocalStorage(tmp_path / "data")).to_pylist()
    }
    assert set(split) == set(whole)
    exact = (
        "messages", "rows", "latency_messages", "latency_max_ns", "clock_offset_ns",
        "negative_latency", "gaps", "silent_minutes", "first_ts_recv", "last_ts_recv",
    )  # fmt: skip
    expected = _expected(sorted(segments.glob("*.ndjson")), {"coinbase", "okx"})
    merged = 0
    for key, w in whole.items():
        s = split[key]
        assert {k: s[k] for k in exact} == {k: w[k] for k in exact}, key
        if s["quantiles_exact"]:
            assert s["latency_p50_ns"] == w["latency_p50_ns"], key
            continue
        merged += 1
        # the histogram gives the order statistic of rank round(q (n - 1)) to half a bin
        lat = np.sort(expected[(*key[:3], int(key[3].timestamp()))]["lat"])
        for name, q in zip(
            ("latency_p50_ns", "latency_p90_ns", "latency_p99_ns"), (0.5, 0.9, 0.99), strict=True
        ):
            at = lat[round(q * (len(lat) - 1))]
            assert abs(s[name] - at) <= 0.0225 * abs(at) + 1_000, (key, name)
    assert merged >= 5  # the busy feeds span several segments


def test_feed_stats_histogram_quantile_is_within_half_a_bin() -> None:
    rng = np.random.default_rng(7)
    lat = np.concatenate(
        [rng.normal(-13e6, 2e6, 5000), rng.lognormal(17, 1, 5000), [0, 500, -500]]
    ).astype(np.int64)
    bins, counts = np.unique(feed_stats.latency_bins(lat), return_counts=True)
    hist = dict(zip(bins.tolist(), counts.tolist(), strict=True))
    assert np.all(np.diff(feed_stats.latency_bins(np.sort(lat))) >= 0)  # monotone bins
    for q in (0.01, 0.5, 0.9, 0.99):
        exact = np.sort(lat)[round(q * (len(lat) - 1))]
        approx = feed_stats.histogram_quantile(hist, q, int(lat.min()), int(lat.max()))
        assert abs(approx - exact) <= 0.023 * abs(exact) + 1_000, q


def test_feed_stats_status_feeds_prints_the_hourly_rows(processed) -> None:
    root, _ = processed
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    cfg = str(root / "fluxforge.yaml")

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fluxforge.cli", "status", "--config", cfg, "--feeds", *args],
            cwd=root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    done = status("--json", "--exchange", "okx")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = orjson.loads(done.stdout)["feeds"]
    want = feed_stats.read(LocalStorage(root / "data"), "okx").to_pylist()
    assert [(r["symbol"], r["channel"], r["latency_p99_ns"]) for r in rows] == [
        (r["symbol"], r["channel"], r["latency_p99_ns"]) for r in want
    ]
    assert {r["channel"] for r in rows} == {"book", "trades", "quotes", "control"}
    text = status("--exchange", "okx")
    assert text.returncode == 0 and "BTC-USDT" in text.stdout and "p99" in text.stdout
    bad = status("--date", "2022-13-45")
    assert bad.returncode != 0 and "YYYY-MM-DD" in bad.stderr
