"""``span_codes`` / ``int_codes`` / ``distinct_spans`` (fluxforge/demux/bytescan.py) give
exactly the indices and dictionary of Arrow's ``dictionary_encode``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fluxforge.demux.bytescan import distinct_spans, int_codes, span_codes, spans


def _check(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> None:
    enc = spans(buf, s, e).dictionary_encode()
    want = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    codes, first = span_codes(buf, s, e)
    assert codes.dtype == np.int64 and first.dtype == np.int64
    assert codes.tolist() == want.tolist()
    # each distinct value's first row, in code order
    assert first.tolist() == [int(np.flatnonzero(want == c)[0]) for c in range(len(enc.dictionary))]
    got_codes, dictionary = distinct_spans(buf, s, e)
    assert got_codes.tolist() == want.tolist()
    assert dictionary.type == pa.string() and dictionary.equals(enc.dictionary)


def _buf(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(97, 100, n, dtype=np.uint8)  # 'a'..'c': many repeats, equal lengths


@pytest.mark.parametrize("n", [0, 1, 2, 7, 100, 5000])
def test_random_spans(n: int) -> None:
    rng = np.random.default_rng(n)
    buf = _buf(rng, 400)
    s = rng.integers(0, 380, n)
    e = s + rng.integers(0, 20, n)  # lengths 0..19: empty spans, words of 8 and tails
    _check(buf, s, e)


def test_strided_and_empty_spans() -> None:
    buf = np.frombuffer(b"btcusdt@depthETH-USDbtcusdt@depth", np.uint8)
    rows = np.array([[0, 13], [13, 20], [20, 33], [5, 5], [0, 0], [13, 20], [20, 33]], np.int64)
    _check(buf, rows[:, 0], rows[:, 1])  # (columns of a 2-d array: not contiguous)
    codes, dictionary = distinct_spans(buf, rows[:, 0], rows[:, 1])
    assert codes.tolist() == [0, 1, 0, 2, 2, 1, 0]
    assert dictionary.to_pylist() == ["btcusdt@depth", "ETH-USD", ""]


def test_many_distinct_values() -> None:
    # every 3-byte string of 'a'..'c' and more: far more distinct values than the first table
    rng = np.random.default_rng(7)
    buf = _buf(rng, 20000)
    s = np.concatenate((np.arange(0, 19000, 3), rng.integers(0, 19000, 30000)))
    e = s + np.concatenate((np.full(6334, 9), rng.integers(0, 12, 30000)))
    _check(buf, s, e)


def test_same_length_strings() -> None:
    # every string of 16 bytes differing in one byte: equal lengths, equal first words
    base = bytearray(b"x" * 16 * 300)
    for k in range(300):
        base[16 * k + (k % 16)] = 65 + k // 16
    buf = np.frombuffer(bytes(base), np.uint8)
    s = np.tile(np.arange(0, 16 * 300, 16), 3)
    _check(buf, s, s + 16)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_int_codes(n: int) -> None:
    rng = np.random.default_rng(n)
    keys = np.concatenate((rng.integers(-5, 5, n), rng.integers(-(2**62), 2**62, n)))
    codes, first = int_codes(keys)
    enc = pa.array(keys).dictionary_encode()
    assert codes.tolist() == enc.indices.to_numpy(zero_copy_only=False).tolist()
    assert keys[first].tolist() == enc.dictionary.to_pylist()
