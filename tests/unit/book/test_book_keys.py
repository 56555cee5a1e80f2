"""The numba fast path of the book's float keys gives Arrow's string -> float64 cast bit for bit,
and leaves every other string to the cast (which still rejects what is not a number)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from fluxforge.book.keys import decimal_keys


def _arrow(strings: list[str]) -> np.ndarray:
    return pa.array(strings, pa.large_string()).cast(pa.float64()).to_numpy(zero_copy_only=False)


def _random_decimals(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        int_digits = rng.choice([0, 1, 1, 2, 3, 5, 8, 12, 16, 20])
        whole = (
            "0"
            if int_digits == 0
            else str(rng.randint(1, 9))
            + "".join(rng.choice("0123456789") for _ in range(int_digits - 1))
        )
        frac = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 1, 2, 4, 8, 15, 25])))
        out.append(whole + ("." + frac if frac else ""))
    return out


def test_keys_equal_arrow_cast_bit_for_bit() -> None:
    rng = random.Random(11)
    strings = [
        *_random_decimals(rng, 50_000),
        "0", "0.0", "0.000", "1", "0.1", "0.3", "123456789012345", "1234567890123456",
        "999999999999999.9", "0.000000000000000000001", "0.0000000000000000000001",
        "0.00000000000000000000001", "1e-5", "1E3", "-0.5", "+1", "01.5", ".5", "5.",
        "00", "9007199254740993", "0.10000000000000000555", "12.50", "12.5",
    ]  # fmt: skip
    arr = pa.array(strings, pa.large_string())
    got = decimal_keys(arr)
    want = _arrow(strings)
    assert got.view(np.int64).tolist() == want.view(np.int64).tolist()
    # a slice (an offset into shared buffers) reads the right strings
    part = decimal_keys(arr.slice(7, 1000))
    assert part.view(np.int64).tolist() == want[7:1007].view(np.int64).tolist()


def test_keys_reject_what_the_cast_rejects() -> None:
    with pytest.raises(pa.ArrowInvalid):
        decimal_keys(pa.array(["1.5", "abc"], pa.large_string()))
    with pytest.raises(pa.ArrowInvalid):
        decimal_keys(pa.array(["1.5", ""], pa.large_string()))
    assert decimal_keys(pa.array([], pa.large_string())).shape == (0,)
