"""The test servers themselves: they start, answer and hold data."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.services


def test_pg_db_fresh_database_accepts_writes(pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (%s)", (7,))
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (7,)


def test_s3_server_bucket_roundtrips_object(s3_server) -> None:
    bucket = s3_server.bucket("svc")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_s3_server_many_buckets_all_writable(s3_server) -> None:
    client = s3_server.client()
    for i in range(5):
        bucket = s3_server.bucket(f"many{i}")
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
        assert client.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1
