"""Fuzz the scanners with mutated real lines: the result must equal the per-line path's (one
plain ``orjson`` parse per line and the venue's rules), line for line, and every line the
rules refuse is quarantined with a reason.

The lines are the first lines of every capture file and the documented shapes of
tests/fixtures/doc_shapes.py. A seeded mutator changes most of them once: key order, extra
keys, escapes, whitespace, a missing field, a huge or negative number, a string number turned
into a JSON number, a truncated frame. The scanners must either take a mutated line with the
same result or leave it to the per-line path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.segments import encode_envelope, frame_payload
from tests.fixtures import doc_shapes
from tests.unit.demux_compare import assert_same, both_paths

SEG = doc_shapes.SEGMENT
PER_FILE = 150


def _shuffle_keys(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict):
        items = [(k, _shuffle_keys(rng, v)) for k, v in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [_shuffle_keys(rng, v) for v in value]
    return value


def _objects(value: Any) -> list[dict]:
    out = []
    if isinstance(value, dict):
        out.append(value)
        for v in value.values():
            out.extend(_objects(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_objects(v))
    return out


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """(container, key) of every scalar inside `value`."""
    out: list[tuple] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_leaves(v, path) if isinstance(v, (dict, list)) else [(value, k)])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_leaves(v, path) if isinstance(v, (dict, list)) else [(value, i)])
    return out


def mutate(rng: random.Random, payload: bytes) -> bytes:
    """One random mutation of a JSON frame (valid JSON out, except for truncation)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    kind = rng.choice(
        ["order", "extra", "escape", "space", "missing", "huge", "number", "neg", "cut"]
    )
    if kind == "order":
        return orjson.dumps(_shuffle_keys(rng, data))
    if kind == "space":
        return json.dumps(data, separators=(" , ", " : ")).encode()
    if kind == "cut":
        return payload[: rng.randrange(1, max(2, len(payload)))]
    if kind == "escape":
        strings = sorted({m for m in payload.split(b'"')[1::2] if m.isalpha()})
        if not strings:
            return payload
        word = rng.choice(strings)
        escaped = b"\\u%04x" % word[0] + word[1:]
        return payload.replace(b'"' + word + b'"', b'"' + escaped + b'"', 1)
    objects = _objects(data)
    leaves = _leaves(data)
    if kind == "extra" and objects:
        rng.choice(objects)["zz_extra"] = rng.choice([1, "x", None, [1], {"a": 1}])
    elif kind == "missing" and objects:
        obj = rng.choice(objects)
        if obj:
            del obj[rng.choice(list(obj))]
    elif kind in ("huge", "number", "neg") and leaves:
        container, key = rng.choice(leaves)
        value = container[key]
        if kind == "huge":
            container[key] = (
                "9" * 30 + ".5" if isinstance(value, str) else 2**70 if value is not None else 1
            )
        elif kind == "number" and isinstance(value, str):
            try:
                container[key] = int(value) if value.isdigit() else float(value)
            except ValueError:
                container[key] = 1
        elif kind == "neg":
            container[key] = f"-{value}" if isinstance(value, str) else -1
    return json.dumps(data, separators=(",", ":")).encode()  # (orjson refuses ints > 64 bits)


def _corpus(captures: Path) -> list[tuple[str, str, bytes, str | None]]:
    files = [p for p in sorted(captures.glob("*/*")) if ".ws." in p.name or ".http." in p.name]
    out = []
    for path in files:
        n = 0
        for rec in merge_captures([path]):
            if rec.kind not in ("recv", "rest"):
                continue
            kind = "msg" if rec.kind == "recv" else "rest"
            out.append(
                (exchange_from_filename(rec.file), kind, frame_payload(rec.payload), rec.url)
            )
            n += 1
            if n >= PER_FILE:
                break
    for ex, kind, payload, url in doc_shapes.frames():
        out.append(
            (ex, kind, payload if isinstance(payload, bytes) else orjson.dumps(payload), url)
        )
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_demux_mutated_lines_scanners_equal_per_line_path(
    captures: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    lines = []
    for seq, (ex, kind, payload, url) in enumerate(_corpus(captures)):
        if rng.random() < 0.7:
            payload = mutate(rng, payload)
        payload = frame_payload(payload)  # as the daemon writes it (non-JSON as a string)
        ts = doc_shapes.BASE_NS + seq * 10_000
        lines.append(encode_envelope(ts, "fuzz", ex, seq, kind, payload, url))
    fast, slow = both_paths(b"".join(lines), monkeypatch, SEG)
    assert fast.lines_in == len(lines)
    assert_same(fast, slow)
    assert fast.quarantined > 0  # the mutations do reach the rules
    assert all(fast.quarantine.column("reason").to_pylist())
