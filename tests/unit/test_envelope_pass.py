"""The demux's one envelope pass (``fluxforge.demux.bytescan.read_envelopes``): per line the
exchange code, ts, seq, kind and payload / url positions the scanners start from, -1 for a
line that does not fit the writer's layout."""

from __future__ import annotations

import numpy as np

from fluxforge.demux.bytescan import (
    AHEAD_LINES,
    ENV_AT,
    ENV_EX,
    ENV_KIND,
    ENV_SEQ,
    ENV_TS,
    ENV_URL,
    KIND_MSG,
    KIND_OTHER,
    KIND_REST,
    line_bounds,
    prefetch_span,
    read_envelopes,
)
from fluxforge.segments import encode_ctl, encode_envelope

TS = 1_700_000_000_000_000_000
URL = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000"


def test_envelope_pass_reads_each_line_once() -> None:
    lines = [
        encode_envelope(TS, "s", "okx", 7, "msg", b'{"a":1}'),
        encode_envelope(TS + 1, "s", "binance", 8, "rest", b'{"b":2}', URL),
        encode_ctl(TS + 2, "s", "okx", 9, "connect", url="wss://x"),
        encode_envelope(TS + 3, "s", "kraken", 10, "msg", b"[1]"),  # not an exchange asked
        b'{"ts":1,"src":"s","ex":"okx","seq":x,"kind":"msg","data":{}}\n',  # seq not an int
        b'{"ts":1, "src":"s","ex":"okx","seq":1,"kind":"msg","data":{}}\n',  # not the layout
        encode_envelope(TS + 4, "s\\u00e9", "okx", 11, "msg", b"{}"),  # escaped source
        b"\n",
    ]
    data = b"".join(lines)
    buf = np.frombuffer(data, np.uint8)
    starts, ends = line_bounds(buf)
    env = read_envelopes(buf, starts, ends, ends > starts, ("binance", "okx"))
    assert env.shape == (len(starts), 6)
    msg, rest, ctl = env[0], env[1], env[2]
    assert msg[[ENV_EX, ENV_TS, ENV_SEQ, ENV_KIND, ENV_URL]].tolist() == [1, TS, 7, KIND_MSG, -1]
    assert data[msg[ENV_AT] : ends[0]] == b'{"a":1}}'
    assert rest[[ENV_EX, ENV_TS, ENV_SEQ, ENV_KIND]].tolist() == [0, TS + 1, 8, KIND_REST]
    assert data[rest[ENV_AT] : ends[1]] == b'{"b":2}}'
    assert data[rest[ENV_URL] : rest[ENV_URL] + len(URL) + 2] == b'"%b"' % URL.encode()
    assert ctl[[ENV_EX, ENV_TS, ENV_SEQ, ENV_KIND, ENV_AT, ENV_URL]].tolist() == [
        1, TS + 2, 9, KIND_OTHER, -1, -1,
    ]  # fmt: skip
    for row in env[3:]:
        assert row.tolist() == [-1] * 6


def test_envelope_pass_asking_ahead_changes_nothing() -> None:
    # the pass asks for the line AHEAD_LINES ahead (prefetch_span): a hint, never a read; a
    # span before, across or past the buffer is asked for without a fault
    buf = np.frombuffer(b'{"a":1}\n', np.uint8)
    for s, e in ((-4096, 4), (-1, 63), (5, 9000), (1 << 40, (1 << 40) + 64), (3, 2)):
        prefetch_span(buf, s, e)
    lines = [
        encode_envelope(TS + k, "s", ("okx", "binance")[k % 2], k, "msg", b'{"k":%d}' % k)
        for k in range(3 * AHEAD_LINES)
    ]
    data = b"".join(lines)
    buf = np.frombuffer(data, np.uint8)
    starts, ends = line_bounds(buf)
    todo = (np.arange(len(starts)) % 3) != 1  # lines skipped between those read
    env = read_envelopes(buf, starts, ends, todo, ("binance", "okx"))
    for k, line in enumerate(lines):  # each line read alone gives the same row
        one = np.frombuffer(line, np.uint8)
        alone = read_envelopes(one, *line_bounds(one), np.array([True]), ("binance", "okx"))[0]
        alone[ENV_AT] += starts[k]  # (a position in the segment)
        assert env[k].tolist() == (alone.tolist() if todo[k] else [-1] * 6), k
