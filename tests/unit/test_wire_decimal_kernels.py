"""The numba decimal primitives every scanner and the level columns use, against plain Python:
``decimal_end`` / ``plain_decimal`` accept exactly what ``FAST_DEC_RE`` (and, when positive, a
non-zero digit) accepts, and ``scaled_words`` gives the decimal128 words of the exact product
on its one-multiply path and on its 128-bit path alike; ``to_decimal``'s numba path gives
Arrow's cast's values and errors."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa

from fluxforge.tables import DECIMAL
from fluxforge.wire import decimal as wire

ODD = [
    "", ".", "5.", ".5", "1..2", "1.2.3", "0", "00", "0.0", "-1", "+1", "1e5", "12a", "1 ",
    " 1", "0.000000000001", "0.0000000000001", "1" * 26, "1" * 27, "1" * 26 + ".5",
]  # fmt: skip


def _texts(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    chars = list("0123456789" * 4 + '.e-x"')
    return ODD + ["".join(rng.choice(chars, int(rng.integers(0, 30)))) for _ in range(n)]


def _fast(text: str, positive: bool) -> bool:
    return bool(wire.FAST_DEC_RE.fullmatch(text)) and (not positive or text.strip("0.") != "")


def test_decimal_end_and_plain_decimal_equal_the_fast_rule() -> None:
    for text in _texts(3, 20_000):
        for positive in (False, True):
            want = _fast(text, positive)
            raw = text.encode()
            assert wire.plain_decimal(np.frombuffer(raw, np.uint8), 0, len(raw), positive) == want
            # a JSON string: its text ends at the first quote
            head = text.split('"')[0]
            quoted = np.frombuffer(b'"' + raw + b'",', np.uint8)
            end = wire.decimal_end(quoted, 0, len(quoted), positive)
            assert end == (len(head) + 1 if _fast(head, positive) else -1), (text, positive)
    unclosed = np.frombuffer(b'"12.5', np.uint8)
    assert wire.decimal_end(unclosed, 0, len(unclosed), False) == -1


def test_scaled_words_equal_the_exact_product() -> None:
    rng = np.random.default_rng(8)
    scale = DECIMAL.scale
    cases = [(0, 0), (1, scale), (2**63 - 1, scale), (2**63 - 1, 0)]
    for n_frac in range(scale + 1):  # each side of the one-multiply bound
        bound = (2**63 - 1) // 10 ** (scale - n_frac) if scale - n_frac <= 18 else 0
        cases += [(max(bound - 1, 0), n_frac), (bound, n_frac), (min(bound + 1, 2**63 - 1), n_frac)]
    for _ in range(20_000):
        cases.append(
            (int(rng.integers(0, 10 ** int(rng.integers(1, 19)))), int(rng.integers(0, scale + 1)))
        )
    for w, n_frac in cases:
        low, high = wire.scaled_words(np.int64(w), np.int64(n_frac), np.int64(scale))
        got = (int(high) << 64) | (int(low) & (2**64 - 1))
        assert got == w * 10 ** (scale - n_frac), (w, n_frac)


def _cast_or_error(arr: pa.Array | pa.ChunkedArray) -> list | str:
    try:
        return arr.cast(DECIMAL).to_pylist()
    except pa.ArrowInvalid:
        return "ArrowInvalid"


def _to_decimal_or_error(arr: pa.Array | pa.ChunkedArray) -> list | str:
    try:
        out = wire.to_decimal(arr)
    except pa.ArrowInvalid:
        return "ArrowInvalid"
    assert out.type == DECIMAL
    return out.to_pylist()


def test_to_decimal_equals_arrows_cast_on_every_string() -> None:
    rng = np.random.default_rng(11)
    chars = list("0123456789" * 4 + ".-")
    texts = [*ODD, "-0", "-0.0", "-12.5", "--1", "1-", "-.5", "0" * 18, "9" * 18, "9" * 19,
             "-" + "9" * 18, "1." + "0" * 12, "1." + "0" * 13, "123456.123456789012"]  # fmt: skip
    texts += ["".join(rng.choice(chars, int(rng.integers(1, 22)))) for _ in range(5_000)]
    for text in texts:  # one string at a time: the fast path or Arrow, the same answer
        for kind in (pa.string(), pa.large_string()):
            arr = pa.array([text], kind)
            assert _to_decimal_or_error(arr) == _cast_or_error(arr), (text, kind)


def test_to_decimal_fast_path_keeps_nulls_slices_and_chunks() -> None:
    rng = np.random.default_rng(12)
    values = [
        None
        if rng.random() < 0.2
        else f"{'-' if rng.random() < 0.3 else ''}"
        f"{int(rng.integers(0, 10**6))}.{int(rng.integers(0, 10**6)):06d}"
        for _ in range(2_000)
    ]
    for kind in (pa.string(), pa.large_string()):
        arr = pa.array(values, kind)
        want = arr.cast(DECIMAL)
        assert wire._plain_words(arr) is not None  # the fast path takes these
        assert wire.to_decimal(arr).equals(want)
        for start, stop in ((0, 2_000), (3, 2_000), (17, 1_311), (1_999, 2_000), (5, 5)):
            part = arr.slice(start, stop - start)
            got = wire.to_decimal(part)
            assert got.to_pylist() == want.slice(start, stop - start).to_pylist()
            assert got.null_count == part.null_count
        chunked = pa.chunked_array([arr.slice(0, 700), arr.slice(700)])
        assert wire.to_decimal(chunked).to_pylist() == want.to_pylist()
    # one chunk the fast path cannot take: Arrow casts the whole column, the same values
    mixed = pa.chunked_array([pa.array(["1.5"]), pa.array(["1e2", "0.10000000000000"])])
    assert wire.to_decimal(mixed).to_pylist() == [Decimal("1.5"), Decimal(100), Decimal("0.1")]
