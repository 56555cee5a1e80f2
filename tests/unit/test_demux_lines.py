"""The segment's line bounds (eight bytes at a time) are the lines ``bytes.split`` cuts."""

from __future__ import annotations

import numpy as np

from fluxforge.demux.bytescan import line_bounds


def test_line_bounds_equal_bytes_split() -> None:
    rng = np.random.default_rng(3)
    cases = [b"", b"\n", b"\n\n", b"a", b"a\n", b"\na", b"12345678\n", b"1234567\n8", b"x" * 17]
    for _ in range(300):  # newlines at every offset of a word, runs of them, none at all
        n = int(rng.integers(0, 200))
        cases.append(bytes(rng.choice([10, 97, 98, 0, 255], n, p=[0.1, 0.6, 0.1, 0.1, 0.1])))
    for data in cases:
        whole = np.frombuffer(data, np.uint8)
        for cut in range(min(8, len(data) + 1)):  # every alignment of the buffer's start
            part, buf = data[cut:], whole[cut:]
            starts, ends = line_bounds(buf)
            got = [part[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
            assert got == part.split(b"\n"), part
            assert np.array_equal(ends[:-1] + 1, starts[1:])
