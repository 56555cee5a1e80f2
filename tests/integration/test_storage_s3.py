"""S3Storage against a real S3-compatible server (SeaweedFS started by tests/_services.py)."""

from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxforge.config import PathNames, S3Settings
from fluxforge.storage import Layout, StorageError, UnsafePathError
from fluxforge.storage.s3 import CLAIMS_DIR, S3Storage

pytestmark = pytest.mark.services

MB = 1024 * 1024


def _store(server, bucket: str | None = None, **settings) -> S3Storage:
    cfg = S3Settings(endpoint_url=server.endpoint_url, region=server.region, **settings)
    return S3Storage(bucket or server.bucket("st"), cfg)


@pytest.fixture
def store(s3_env) -> S3Storage:
    return _store(s3_env)


def test_s3_storage_write_read_delete_roundtrip_consistent(store: S3Storage) -> None:
    store.write_bytes("raw/ready/src/a.ndjson", b"line\n")
    assert store.exists("raw/ready/src/a.ndjson")
    assert store.size("raw/ready/src/a.ndjson") == 5
    assert store.read_bytes("raw/ready/src/a.ndjson") == b"line\n"
    store.write_bytes("raw/ready/src/a.ndjson", b"replaced")
    assert store.read_bytes("raw/ready/src/a.ndjson") == b"replaced"
    store.delete("raw/ready/src/a.ndjson")
    assert not store.exists("raw/ready/src/a.ndjson")
    store.delete("raw/ready/src/a.ndjson")  # deleting a missing key is not an error


def test_s3_storage_read_missing_error_names_uri(store: S3Storage) -> None:
    with pytest.raises(StorageError, match=r"s3 read s3://st-[0-9a-f]+/nope/x\.bin"):
        store.read_bytes("nope/x.bin")
    with pytest.raises(StorageError, match="size"):
        store.size("nope/x.bin")


def test_s3_storage_list_glob_recursive_and_prefix(s3_env) -> None:
    bucket = s3_env.bucket("list")
    store = _store(s3_env, bucket, prefix="tenant/a")
    for key in (
        "raw/ready/s1/segment_20240101T00_00001.ndjson",
        "raw/ready/s1/segment_20240101T00_00002.ndjson",
        "raw/ready/s1/notes.txt",
        "raw/ready/s2/segment_20240101T01_00001.ndjson",
    ):
        store.write_bytes(key, b"x")
    assert store.list("raw/ready/s1", "segment_*.ndjson") == [
        "raw/ready/s1/segment_20240101T00_00001.ndjson",
        "raw/ready/s1/segment_20240101T00_00002.ndjson",
    ]
    # not recursive: the files directly in raw/ready (none), recursive: all segments
    assert store.list("raw/ready") == []
    assert len(store.list("raw/ready", "segment_*", recursive=True)) == 3
    assert store.uri("raw/ready/s1/notes.txt") == f"s3://{bucket}/tenant/a/raw/ready/s1/notes.txt"
    # the prefix is applied: another storage on the bucket root sees the full keys
    root = _store(s3_env, bucket)
    assert "tenant/a/raw/ready/s1/notes.txt" in root.list("", recursive=True)


def test_s3_storage_move_claims_once_and_overwrites_destination(store: S3Storage) -> None:
    store.write_bytes("raw/ready/s/seg.ndjson", b"new")
    store.write_bytes("raw/processing/s/seg.ndjson", b"stale leftover")
    assert store.move("raw/ready/s/seg.ndjson", "raw/processing/s/seg.ndjson") is True
    assert store.move("raw/ready/s/seg.ndjson", "raw/processing/s/seg.ndjson") is False
    assert not store.exists("raw/ready/s/seg.ndjson")
    assert store.read_bytes("raw/processing/s/seg.ndjson") == b"new"
    # no claim marker left behind, and markers never show in listings
    assert store.list(CLAIMS_DIR, recursive=True) == []
    assert store.list("", recursive=True) == ["raw/processing/s/seg.ndjson"]


def _race(stores: list[S3Storage], src: str, dst: str) -> list[bool]:
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []

    def claim(st: S3Storage) -> None:
        barrier.wait()
        results.append(st.move(src, dst))

    threads = [threading.Thread(target=claim, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_s3_storage_concurrent_movers_exactly_one_wins(s3_env) -> None:
    bucket = s3_env.bucket("race")
    stores = [_store(s3_env, bucket) for _ in range(8)]
    for round_no in range(5):
        src, dst = f"ready/seg{round_no}", f"processing/seg{round_no}"
        stores[0].write_bytes(src, f"payload {round_no}".encode())
        results = _race(stores, src, dst)
        assert len(results) == len(stores)
        assert results.count(True) == 1, f"round {round_no}: {results}"
        assert stores[0].read_bytes(dst) == f"payload {round_no}".encode()
        assert not stores[0].exists(src)


def test_s3_storage_move_stale_claim_blocks_until_lease_expires(s3_env) -> None:
    bucket = s3_env.bucket("lease")
    store = _store(s3_env, bucket)
    store.write_bytes("ready/seg", b"data")
    # a mover crashed right after claiming: its marker is still there
    store.write_bytes(f"{CLAIMS_DIR}/ready/seg", b'{"owner": "crashed"}')
    assert store.move("ready/seg", "processing/seg") is False
    assert store.exists("ready/seg")
    expired = S3Storage(bucket, store.settings, claim_lease_s=0.0)
    assert expired.move("ready/seg", "processing/seg") is True
    assert store.read_bytes("processing/seg") == b"data"
    assert not store.exists(f"{CLAIMS_DIR}/ready/seg")


def test_s3_storage_move_missing_source_returns_false(store: S3Storage) -> None:
    assert store.move("ready/none", "processing/none") is False
    assert not store.exists("processing/none")


def test_s3_storage_large_object_multipart_write_copy_and_upload(s3_env, tmp_path) -> None:
    store = _store(s3_env, multipart_threshold_mb=5)
    body = bytes(range(256)) * (6 * MB // 256 + 17)  # > 6 MB, not a multiple of the part size
    store.write_bytes("big/a.bin", body)
    etag = store.client.head_object(Bucket=store.bucket, Key="big/a.bin")["ETag"]
    assert etag.strip('"').endswith("-2")  # two parts: the multipart upload was used
    assert store.read_bytes("big/a.bin") == body
    # the multipart copy path of move (objects above the single-copy limit)
    store.max_single_copy = 5 * MB
    assert store.move("big/a.bin", "big/b.bin") is True
    assert store.read_bytes("big/b.bin") == body and not store.exists("big/a.bin")
    local = tmp_path / "c.bin"
    local.write_bytes(body)
    store.upload_file(local, "big/c.bin")
    store.download_file("big/c.bin", tmp_path / "d.bin")
    assert (tmp_path / "d.bin").read_bytes() == body


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a\0b"])
def test_s3_storage_refuses_keys_that_escape_root(store: S3Storage, key: str) -> None:
    with pytest.raises(UnsafePathError):
        store.write_bytes(key, b"x")


def test_s3_storage_layout_sanitizes_data_parts(store: S3Storage) -> None:
    layout = Layout(PathNames())
    key = layout.lake_part("trades", "../../etc", "BTC/USD", "2024-01-01", "seg/../../x.ndjson")
    store.write_bytes(key, b"x")
    (listed,) = store.list("", recursive=True)
    assert listed.startswith("processed/trades/exchange=")
    assert ".." not in listed.split("/")
    assert listed.count("/") == key.count("/") == 5


def test_s3_storage_client_config_retries_are_botocores(store: S3Storage) -> None:
    retries = store.client.meta.config.retries
    assert retries["mode"] == "adaptive"
    assert retries["total_max_attempts"] == store.settings.max_attempts


class _FlakyProxy(BaseHTTPRequestHandler):
    """Answers the first `failures` requests with 503 SlowDown, then forwards to S3."""

    upstream = ("127.0.0.1", 0)
    failures = 0
    seen = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            type(self).seen += 1
            fail = type(self).failures > 0
            if fail:
                type(self).failures -= 1
        if fail:
            payload = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def flaky_proxy(s3_env) -> Iterator[type[_FlakyProxy]]:
    up = urlparse(s3_env.endpoint_url)
    handler = type("Flaky", (_FlakyProxy,), {"upstream": (up.hostname, up.port)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


def test_s3_storage_throttled_requests_are_retried_by_botocore(s3_env, flaky_proxy) -> None:
    bucket = s3_env.bucket("flaky")
    cfg = S3Settings(
        endpoint_url=flaky_proxy.url, region=s3_env.region, max_attempts=3, retry_mode="standard"
    )
    store = S3Storage(bucket, cfg)
    flaky_proxy.failures = 2
    flaky_proxy.seen = 0
    store.write_bytes("k", b"value")
    assert flaky_proxy.seen == 3  # two 503s, then the write went through
    assert _store(s3_env, bucket).read_bytes("k") == b"value"
    # more failures than attempts: a StorageError naming the key, not a hang
    flaky_proxy.failures = 3
    with pytest.raises(StorageError, match=r"s3 write s3://flaky-[0-9a-f]+/k2"):
        store.write_bytes("k2", b"v")


def test_s3_storage_arrow_polars_fsspec_readers(store: S3Storage) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes("processed/t/date=2024-01-01/part-1.parquet", buf.getvalue())
    key = "processed/t/date=2024-01-01/part-1.parquet"

    fs = store.arrow_filesystem()
    assert pq.read_table(store.arrow_path(key), filesystem=fs).equals(table)

    import polars as pl

    frame = pl.read_parquet(store.uri(key), storage_options=store.storage_options())
    assert frame["a"].to_list() == [1, 2, 3]

    import duckdb

    conn = duckdb.connect()
    conn.register_filesystem(store.fsspec_filesystem())
    got = conn.execute("SELECT sum(a) FROM read_parquet(?)", [store.uri(key)]).fetchone()
    assert got == (6,)
