"""The demux's one envelope pass (``fluxforge.demux.bytescan.read_envelopes``): per line the
exchange code, ts, seq, kind and payload / url positions the scanners start from, -1 for a
line that does not fit the writer's layout."""

from __future__ import annotations

import numpy as np

from fluxforge.demux.bytescan import (
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
