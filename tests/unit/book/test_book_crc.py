"""The book kernel's CRC-32 (eight bytes per step) against zlib's."""

from __future__ import annotations

import zlib

import numpy as np

from fluxforge.book import kernel as K


def test_crc32_equals_zlib_at_every_length_and_byte() -> None:
    table = K.crc_table()
    rng = np.random.default_rng(7)
    data = np.frombuffer(rng.bytes(2000), dtype=np.uint8).copy()
    # every tail length around the 8-byte step, and long texts
    for n in [*range(0, 40), 255, 256, 1000, 1999, 2000]:
        assert K.crc32(data, n, table) == zlib.crc32(data[:n].tobytes()), n
    every_byte = np.arange(256, dtype=np.uint8).repeat(3)
    assert K.crc32(every_byte, len(every_byte), table) == zlib.crc32(every_byte.tobytes())
