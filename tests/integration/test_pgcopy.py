"""fluxforge.pgcopy decodes PostgreSQL binary COPY exactly (real server output)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from fluxforge.lifecycle import copy_out_blocks
from fluxforge.pgcopy import CopyDecodeError, Decoder

pytestmark = pytest.mark.services

NUMS = [
    "0",
    "1",
    "-1",
    "0.5",
    "-0.000000000000000001",
    "0.000000000000000001",
    "123456.789012345678901234",  # rounded by numeric(38,18) to 18 decimals
    "99999999999999999999.999999999999999999",
    "-99999999999999999999.999999999999999999",
    "10000",
    "100000000",
    "42.1",
    None,
]
TEXTS = ["coinbase", "", 'q"uote,comma', "line\nbreak", "ünï€😀", None, "x" * 1000, "a", "b"]
INTS = [0, -1, 2**63 - 1, -(2**63), 7, None, 12345678901, -5, 3]


def _stream(dsn: str, query: str) -> bytes:
    with psycopg.connect(dsn) as conn:
        return b"".join(copy_out_blocks(conn, sql.SQL(query), 1 << 20))


@pytest.fixture
def rows_db(pg_db: str) -> str:
    with psycopg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE t (n numeric(38,18), s text, b bigint, i integer)")
        for k in range(max(len(NUMS), len(TEXTS))):
            conn.execute(
                "INSERT INTO t VALUES (%s, %s, %s, %s)",
                (
                    NUMS[k % len(NUMS)],
                    TEXTS[k % len(TEXTS)],
                    INTS[k % len(INTS)],
                    None if k == 4 else k - 3,
                ),
            )
    return pg_db


def _decoder() -> Decoder:
    return Decoder(
        ["n", "s", "b", "i"],
        [pa.decimal128(38, 18), pa.string(), pa.int64(), pa.int32()],
        ["numeric(38,18)", "text", "bigint", "integer"],
    )


def test_pgcopy_decoder_matches_server_values(rows_db: str) -> None:
    raw = _stream(rows_db, "COPY t TO STDOUT (FORMAT binary)")
    dec = _decoder()
    batch, used = dec.decode(raw)
    assert used == len(raw) and dec.finished
    with psycopg.connect(rows_db) as conn:
        want = conn.execute("SELECT n, s, b, i FROM t").fetchall()
    got = list(zip(*(batch.column(c).to_pylist() for c in range(4)), strict=True))
    assert got == [tuple(r) for r in want]
    assert (
        Decimal("123456.789012345678901234").quantize(Decimal("1e-18"))
        in batch.column(0).to_pylist()
    )


def test_pgcopy_decoder_byte_by_byte_equals_whole(rows_db: str) -> None:
    raw = _stream(rows_db, "COPY t TO STDOUT (FORMAT binary)")
    whole, _ = _decoder().decode(raw)
    dec, buf, batches = _decoder(), bytearray(), []
    for k in range(0, len(raw), 7):
        buf += raw[k : k + 7]
        batch, used = dec.decode(buf)
        del buf[:used]
        if batch is not None:
            batches.append(batch)
    assert dec.finished and not buf
    assert pa.Table.from_batches(batches).equals(pa.Table.from_batches([whole]))


def test_pgcopy_decoder_rejects_nan_and_bad_stream(pg_db: str) -> None:
    raw = _stream(pg_db, "COPY (SELECT 'NaN'::numeric) TO STDOUT (FORMAT binary)")
    dec = Decoder(["n"], [pa.decimal128(38, 18)], ["numeric"])
    with pytest.raises(CopyDecodeError, match="column 'n'"):
        dec.decode(raw)
    with pytest.raises(CopyDecodeError, match="signature"):
        _decoder().decode(b"not a copy stream at all")
