"""The segment's line bounds (eight bytes at a time) are the lines ``bytes.split`` cuts."""

from __future__ import annotations

import numpy as np

from fluxforge.demux.bytescan import line_bounds, str_end


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


def _str_end_bytewise(buf: np.ndarray, p: int, end: int) -> int:
    if p >= end or buf[p] != 34:
        return -1
    for k in range(p + 1, end):
        if buf[k] == 34:
            return k
        if buf[k] == 92 or buf[k] < 32 or buf[k] >= 128:
            return -1
    return -1


def test_str_end_eight_bytes_at_a_time_equals_the_byte_rule() -> None:
    """Plain runs of every length, then one byte that may end the string (a quote, a
    backslash, a control or non-ASCII byte) at every offset of an 8-byte word, or none."""
    rng = np.random.default_rng(4)
    plain = np.array([b for b in range(32, 128) if b not in (34, 92)], np.uint8)
    stops = [34, 92, 0, 10, 31, 128, 200, 255]
    checked = 0
    for n in range(0, 40):
        for stop in [None, *stops]:
            for _ in range(8):
                body = rng.choice(plain, n)
                tail = [] if stop is None else [stop]
                text = np.concatenate(([34], body, tail, rng.choice(plain, 9))).astype(np.uint8)
                for end in (len(text), n + 2, n + 1):
                    got = str_end(text, 0, end)
                    assert got == _str_end_bytewise(text, 0, end), (bytes(text), end)
                    checked += 1
    assert checked > 5000
