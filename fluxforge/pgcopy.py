"""Decode PostgreSQL binary COPY (``COPY ... TO STDOUT (FORMAT binary)``) into Arrow arrays.

A numba kernel splits the stream into (offset, length) per field and converts whole columns:
``bigint`` -> int64, ``integer`` -> int32, ``text`` -> string, ``numeric`` -> decimal128(p, s)
(base-10000 digits folded into a 128-bit integer scaled by 10^s). The decoder is incremental:
``decode(buffer)`` takes as many complete rows as the buffer holds and reports how many bytes it
consumed, so a stream can be decoded chunk by chunk while PostgreSQL is still sending.

Binary COPY skips PostgreSQL's text formatting of numerics and the CSV parse on our side, the two
costs that dominated a CSV export (see benchmarks/bench_rotation.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER_MIN = len(SIGNATURE) + 8

KIND_INT8, KIND_INT4, KIND_TEXT, KIND_NUMERIC = 0, 1, 2, 3
_KINDS = {"bigint": KIND_INT8, "integer": KIND_INT4, "text": KIND_TEXT}

_M32 = np.uint64(0xFFFFFFFF)
_POW10 = np.array([10**k for k in range(19)], dtype=np.uint64)


class CopyDecodeError(ValueError):
    """The binary COPY stream is malformed or holds a value the target type cannot take."""


def kind_of(pg_type: str) -> int:
    if pg_type.startswith("numeric"):
        return KIND_NUMERIC
    if pg_type not in _KINDS:
        raise CopyDecodeError(f"binary COPY decoding of type {pg_type!r} is not supported")
    return _KINDS[pg_type]


@numba.njit(cache=True, nogil=True)
def _be16(buf, pos):
    v = (np.int32(buf[pos]) << 8) | np.int32(buf[pos + 1])
    return v - 65536 if v >= 32768 else v


@numba.njit(cache=True, nogil=True)
def _be32(buf, pos):
    v = np.int64(0)
    for k in range(4):
        v = (v << 8) | np.int64(buf[pos + k])
    return v - 4294967296 if v >= 2147483648 else v


@numba.njit(cache=True, nogil=True)
def _count(buf, start, ncols):
    """Complete rows from `start` (stops at the trailer, a partial row or a bad field count)."""
    n = len(buf)
    pos = start
    rows = 0
    while pos + 2 <= n:
        if _be16(buf, pos) != ncols:
            break
        p = pos + 2
        for _c in range(ncols):
            if p + 4 > n:
                return rows
            ln = _be32(buf, p)
            p += 4
            if ln > 0:
                p += ln
        if p > n:
            break
        pos = p
        rows += 1
    return rows


@numba.njit(cache=True, nogil=True)
def _scan(buf, start, ncols, max_rows, offsets, lengths):
    """Fill offsets/lengths for complete rows from `start`. Returns (rows, end, trailer_seen)
    or rows = -1 on a field-count mismatch."""
    n = len(buf)
    pos = start
    rows = 0
    while rows < max_rows:
        if pos + 2 > n:
            break
        count = _be16(buf, pos)
        if count == -1:
            return rows, pos + 2, True
        if count != ncols:
            return -1, pos, False
        p = pos + 2
        complete = True
        for c in range(ncols):
            if p + 4 > n:
                complete = False
                break
            ln = _be32(buf, p)
            p += 4
            if ln > 0 and p + ln > n:
                complete = False
                break
            offsets[rows, c] = p
            lengths[rows, c] = ln
            if ln > 0:
                p += ln
        if not complete:
            break
        pos = p
        rows += 1
    return rows, pos, False


@numba.njit(cache=True, nogil=True)
def _int_column(buf, offsets, lengths, col, rows, width, out, valid):
    for r in range(rows):
        ln = lengths[r, col]
        if ln < 0:
            valid[r] = False
            out[r] = 0
            continue
        p = offsets[r, col]
        v = np.int64(0)
        for k in range(width):
            v = (v << 8) | np.int64(buf[p + k])
        if width == 4 and v >= 2147483648:
            v -= 4294967296
        out[r] = v


@numba.njit(cache=True, nogil=True)
def _text_column(buf, offsets, lengths, col, rows, out_offsets, data, valid):
    pos = 0
    out_offsets[0] = 0
    for r in range(rows):
        ln = lengths[r, col]
        if ln < 0:
            valid[r] = False
        else:
            p = offsets[r, col]
            for k in range(ln):
                data[pos + k] = buf[p + k]
            pos += ln
        out_offsets[r + 1] = pos


@numba.njit(cache=True, nogil=True)
def _mul_small(hi, lo, m):
    """(hi, lo) * m for m < 2**64, modulo 2**128."""
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0 = lo & m32
    a1 = lo >> s32
    b0 = m & m32
    b1 = m >> s32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    p11 = a1 * b1
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    new_lo = (p00 & m32) | (mid << s32)
    new_hi = hi * m + p11 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)
    return new_hi, new_lo


@numba.njit(cache=True, nogil=True)
def _add_small(hi, lo, d):
    new_lo = lo + d
    if new_lo < lo:
        hi += np.uint64(1)
    return hi, new_lo


@numba.njit(cache=True, nogil=True)
def _numeric_column(buf, offsets, lengths, col, rows, scale, pow10, out, valid):
    """numeric -> little-endian 128-bit integers value * 10**scale. Returns the first bad row
    (NaN/infinity, or more precision than `scale`) or -1."""
    one = np.uint64(1)
    for r in range(rows):
        ln = lengths[r, col]
        if ln < 0:
            valid[r] = False
            out[r, 0] = 0
            out[r, 1] = 0
            continue
        p = offsets[r, col]
        ndigits = _be16(buf, p)
        weight = _be16(buf, p + 2)
        sign = (np.int32(buf[p + 4]) << 8) | np.int32(buf[p + 5])
        if sign != 0 and sign != 0x4000:
            return r
        hi = np.uint64(0)
        lo = np.uint64(0)
        unit = 0  # exponent of acc's unit
        for k in range(ndigits):
            d = np.uint64((np.int32(buf[p + 8 + 2 * k]) << 8) | np.int32(buf[p + 9 + 2 * k]))
            e = 4 * (weight - k)
            if e >= -scale:
                if k > 0:
                    hi, lo = _mul_small(hi, lo, pow10[4])
                hi, lo = _add_small(hi, lo, d)
                unit = e
            else:
                s = -scale - e  # 1..3: the digits below 10**-scale must be zero
                if s > 3 or d % pow10[s] != 0:
                    return r
                if k > 0:
                    hi, lo = _mul_small(hi, lo, pow10[4 - s])
                hi, lo = _add_small(hi, lo, d // pow10[s])
                unit = -scale
                break
        if ndigits > 0:
            shift = unit + scale
            while shift > 0:
                step = shift if shift < 18 else 18
                hi, lo = _mul_small(hi, lo, pow10[step])
                shift -= step
        if sign == 0x4000:
            lo = ~lo + one
            hi = ~hi + (one if lo == 0 else np.uint64(0))
        out[r, 0] = lo
        out[r, 1] = hi
    return -1


def _bitmap(valid: np.ndarray) -> pa.Buffer | None:
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


@dataclass
class Decoder:
    """Incremental decoder for one binary COPY stream of known column types."""

    names: list[str]
    types: list[pa.DataType]
    pg_types: list[str]
    header_done: bool = False
    finished: bool = False

    def __post_init__(self) -> None:
        self.kinds = [kind_of(t) for t in self.pg_types]

    def _header(self, buf: np.ndarray) -> int:
        if len(buf) < HEADER_MIN:
            return 0
        if bytes(buf[: len(SIGNATURE)]) != SIGNATURE:
            raise CopyDecodeError("not a PostgreSQL binary COPY stream (bad signature)")
        ext = int(_be32(buf, len(SIGNATURE) + 4))
        if len(buf) < HEADER_MIN + ext:
            return 0
        self.header_done = True
        return HEADER_MIN + ext

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[pa.RecordBatch | None, int]:
        """Decode the complete rows at the start of `data`: (batch or None, bytes consumed)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        start = 0
        if not self.header_done:
            start = self._header(buf)
            if not self.header_done:
                return None, 0
        ncols = len(self.names)
        # a row takes at least 2 + 4 * ncols bytes; large buffers are counted first so the
        # offset arrays stay small
        bound = (len(buf) - start) // (2 + 4 * ncols) + 1
        max_rows = bound if bound <= 200_000 else int(_count(buf, start, ncols)) + 1
        offsets = np.empty((max_rows, ncols), dtype=np.int64)
        lengths = np.empty((max_rows, ncols), dtype=np.int64)
        rows, end, trailer = _scan(buf, start, ncols, max_rows, offsets, lengths)
        if rows < 0:
            raise CopyDecodeError(f"binary COPY row at byte {end}: expected {ncols} fields")
        self.finished = trailer
        if rows == 0:
            return None, end
        arrays = [self._column(buf, offsets, lengths, c, rows) for c in range(ncols)]
        return pa.RecordBatch.from_arrays(arrays, names=self.names), end

    def _column(self, buf, offsets, lengths, c: int, rows: int) -> pa.Array:
        kind, typ = self.kinds[c], self.types[c]
        valid = np.ones(rows, dtype=bool)
        if kind in (KIND_INT8, KIND_INT4):
            out = np.empty(rows, dtype=np.int64)
            _int_column(buf, offsets, lengths, c, rows, 8 if kind == KIND_INT8 else 4, out, valid)
            values = out if kind == KIND_INT8 else out.astype(np.int32)
            return pa.Array.from_buffers(typ, rows, [_bitmap(valid), pa.py_buffer(values)])
        if kind == KIND_TEXT:
            total = int(np.maximum(lengths[:rows, c], 0).sum())
            out_offsets = np.empty(rows + 1, dtype=np.int32 if total < 2**31 else np.int64)
            data = np.empty(total, dtype=np.uint8)
            _text_column(buf, offsets, lengths, c, rows, out_offsets, data, valid)
            st = pa.string() if out_offsets.dtype == np.int32 else pa.large_string()
            arr = pa.Array.from_buffers(
                st, rows, [_bitmap(valid), pa.py_buffer(out_offsets), pa.py_buffer(data)]
            )
            return arr if st == typ else arr.cast(typ)
        out = np.empty((rows, 2), dtype=np.uint64)
        bad = _numeric_column(buf, offsets, lengths, c, rows, typ.scale, _POW10, out, valid)
        if bad >= 0:
            raise CopyDecodeError(
                f"column {self.names[c]!r}: value in row {bad} is NaN/infinite or has more than "
                f"{typ.scale} decimals"
            )
        return pa.Array.from_buffers(typ, rows, [_bitmap(valid), pa.py_buffer(out)])
