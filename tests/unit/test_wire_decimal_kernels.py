"""The numba decimal primitives every scanner and the level columns use, against plain Python:
``decimal_end`` / ``plain_decimal`` accept exactly what ``FAST_DEC_RE`` (and, when positive, a
non-zero digit) accepts, and ``scaled_words`` gives the decimal128 words of the exact product
on its one-multiply path and on its 128-bit path alike."""

from __future__ import annotations

import numpy as np

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
