"""`fluxforge compile` fills numba's on-disk cache with every kernel the refinery calls: a
process that starts from that cache and refines real captures and every documented shape
compiles nothing more (no file of the cache is added or rewritten)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.jitwarm import SEGMENT, WARMUP, cache_files, ready_in_local_lake
from fluxforge.segments import encode_envelope, frame_payload
from tests.fixtures import doc_shapes

REPO = Path(__file__).resolve().parents[2]


def test_bundled_segment_is_what_doc_shapes_generates() -> None:
    assert WARMUP.read_bytes() == doc_shapes.jit_warmup(), (
        "fluxforge/jitwarm.ndjson is stale: uv run python -m tests.fixtures.doc_shapes "
        "> fluxforge/jitwarm.ndjson"
    )


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    env["NUMBA_CACHE_DIR"] = str(cache)  # empty: the first process compiles everything
    return env


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fluxforge.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _segment(captures: Path) -> bytes:
    """Every documented shape, then every recorded frame of each capture file, in one hour."""
    lines = doc_shapes.segment(1.0).splitlines(keepends=True)
    files = sorted(p for p in captures.glob("*/*") if ".ws." in p.name or ".http." in p.name)
    for rec in merge_captures(files):
        if rec.kind not in ("recv", "rest"):
            continue
        seq = len(lines)
        kind = "msg" if rec.kind == "recv" else "rest"
        ex = exchange_from_filename(rec.file)
        payload = frame_payload(rec.payload)
        ts = doc_shapes.BASE_NS + seq * 10_000
        lines.append(encode_envelope(ts, "docs", ex, seq, kind, payload, rec.url))
    return b"".join(lines)


@pytest.mark.slow
def test_compile_leaves_nothing_for_the_refinery_to_compile(tmp_path: Path, captures: Path):
    env = _env(tmp_path / "cache")
    assert "compiled and cached" in _run(env, "compile")
    cached = cache_files(tmp_path / "cache")
    assert any(name.endswith(".nbc") for name in cached)

    cfg = ready_in_local_lake(tmp_path, "mixed", SEGMENT, _segment(captures))
    config = tmp_path / "fluxforge.yaml"  # the same lake, for `fluxforge process`
    config.write_text(yaml.safe_dump({"storage": cfg.model_dump(mode="json")["storage"]}))
    report = orjson.loads(_run(env, "process", "--config", str(config), "--json", "--quiet"))
    assert report["segments"] and not report["failed"] and report["trades"] > 0

    after = cache_files(tmp_path / "cache")
    added = sorted(set(after) - set(cached))
    rewritten = sorted(k for k in cached if after.get(k) != cached[k])
    assert not added and not rewritten, f"compiled after `fluxforge compile`: {added + rewritten}"
    assert "already cached" in _run(env, "compile")
