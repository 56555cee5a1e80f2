"""S3 storage on boto3: botocore retry modes, the transfer manager for multipart.

Retries of throttling / 5xx / connection errors are botocore's (``retries`` in the client
config: mode ``adaptive`` or ``standard``, ``max_attempts``); uploads, downloads and large copies
go through boto3's transfer manager (multipart above ``multipart_threshold_mb``). No hand-written
retry loops.

``move`` is copy + delete, made safe against double claims with a claim marker:

1. HEAD the source (gone -> ``False``) and remember its ETag.
2. Create ``.fluxforge-claims/<source key>`` with ``If-None-Match: *`` (S3 conditional write,
   atomic on the server). Someone else holds it -> ``False``. A marker older than
   ``claim_lease_s`` (measured on the server's clock: the marker's ``Last-Modified`` against the
   ``Date`` of the same response) was left by a crashed mover and is taken over with ``If-Match``
   on its ETag, so of several takers exactly one wins.
3. Copy with ``x-amz-copy-source-if-match`` = the remembered ETag (the source vanished or was
   rewritten -> ``False``). The destination is overwritten like a local rename would.
4. Delete the source with ``If-Match`` = the ETag (a rewritten source is kept), then the marker.

Guarantee: of any number of concurrent ``move`` calls on one source object, exactly one returns
``True``, provided the winner finishes within ``claim_lease_s`` (default 10 min; a copy of a
100 MB segment takes seconds). A crash at any step loses nothing: before step 4 the source is
intact (a later move, after the lease, completes the job); after it the destination is whole.
"""

from __future__ import annotations

import io
import logging
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from fluxforge.config import S3Settings
from fluxforge.redact import install_log_redaction, redact, register_secret
from fluxforge.storage.base import Storage, StorageError
from fluxforge.storage.paths import safe_key

log = logging.getLogger(__name__)

_MB = 1024 * 1024
CLAIMS_DIR = ".fluxforge-claims"
# CopyObject copies at most 5 GiB in one request; larger objects need a multipart copy.
MAX_SINGLE_COPY = 5 * 1024 * _MB


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound")


def _precondition(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (
        409,
        412,
    )


# botocore's DEBUG logs print the signed request headers ("Credential=<access key id>/...") and
# S3 error bodies may echo the key id: the credential values are registered with the one
# redaction rule (fluxforge/redact.py), which masks them in every log record and message.
def _redact_credentials_in_logs(session: boto3.session.Session) -> None:
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        for value in (frozen.access_key, frozen.secret_key, frozen.token):
            register_secret(value)
    install_log_redaction()


class S3Storage(Storage):
    backend = "s3"

    def __init__(
        self,
        bucket: str,
        settings: S3Settings | None = None,
        client: Any = None,
        claim_lease_s: float = 600.0,
    ) -> None:
        self.settings = settings or S3Settings()
        self.bucket = bucket
        self.prefix = safe_key(self.settings.prefix).strip("/") if self.settings.prefix else ""
        self.claim_lease_s = claim_lease_s
        self.max_single_copy = MAX_SINGLE_COPY
        self._session = boto3.session.Session()
        self.region = self.settings.region or self._session.region_name or "us-east-1"
        self.client = client or self._session.client(
            "s3",
            region_name=self.region,
            endpoint_url=self.settings.endpoint_url,
            config=BotoConfig(
                retries={
                    # total attempts, first one included (botocore's "max_attempts" counts
                    # retries only)
                    "total_max_attempts": self.settings.max_attempts,
                    "mode": self.settings.retry_mode,
                },
                connect_timeout=self.settings.connect_timeout_s,
                read_timeout=self.settings.read_timeout_s,
                s3={"addressing_style": "path"},
            ),
        )
        _redact_credentials_in_logs(self._session)
        threshold = self.settings.multipart_threshold_mb * _MB
        self.transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold)

    # -- keys --------------------------------------------------------------------------------

    def _k(self, path: str) -> str:
        key = safe_key(path)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _claim_key(self, path: str) -> str:
        return self._k(f"{CLAIMS_DIR}/{safe_key(path)}")

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._k(path)}"

    def _fail(self, op: str, path: str, exc: Exception) -> StorageError:
        return StorageError(redact(f"s3 {op} s3://{self.bucket}/{self._k(path)}: {exc}"))

    # -- the Storage interface -----------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        buf = io.BytesIO()
        try:
            self.client.download_fileobj(self.bucket, self._k(path), buf, Config=self.transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", path, exc) from exc
        return buf.getvalue()

    def write_bytes(self, path: str, data: bytes) -> None:
        """One PUT (or one completed multipart upload): readers see all of it or the old one."""
        try:
            self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, self._k(path), Config=self.transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", path, exc) from exc

    def move(self, src: str, dst: str) -> bool:
        """Copy + delete guarded by a claim marker (see the module docstring)."""
        src_key, dst_key = self._k(src), self._k(dst)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=src_key)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise self._fail("move(head)", src, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("move(head)", src, exc) from exc
        etag, size = head["ETag"], int(head["ContentLength"])
        marker = self._claim(src, etag)
        if marker is None:
            return False
        try:
            if not self._copy_if_match(src_key, dst_key, etag, size, src):
                return False
            try:
                self.client.delete_object(Bucket=self.bucket, Key=src_key, IfMatch=etag)
            except ClientError as exc:
                if _precondition(exc):
                    # rewritten after our copy: the new object stays for a later move
                    log.warning("move %s: source rewritten during the move; kept", self.uri(src))
                elif not _missing(exc):
                    raise self._fail("move(delete)", src, exc) from exc
            return True
        finally:
            self._release(src, marker)

    def _claim(self, src: str, etag: str) -> str | None:
        """Create (or take over a stale) claim marker; its ETag, or None when claimed already."""
        key = self._claim_key(src)
        body = f'{{"owner": "{uuid.uuid4().hex}", "etag": {etag!r}}}'.encode()
        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")[
                "ETag"
            ]
        except ClientError as exc:
            if not _precondition(exc):
                raise self._fail("move(claim)", src, exc) from exc
        try:
            head = self.client.get_object(Bucket=self.bucket, Key=key)
            held_by = head["Body"].read()
        except ClientError as exc:
            if _missing(exc):  # released in between: the other mover finished
                return None
            raise self._fail("move(claim)", src, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("move(claim)", src, exc) from exc
        if held_by == body:
            # our own marker: the first PUT was executed but its answer was lost (timeout,
            # reset) and botocore's retry got 412 from it
            return head["ETag"]
        server_now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - head["LastModified"]).total_seconds()
        if age < self.claim_lease_s:
            return None
        log.warning("move %s: taking over a claim held for %.0f s", self.uri(src), age)
        try:
            return self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, IfMatch=head["ETag"]
            )["ETag"]
        except ClientError as exc:
            if _precondition(exc) or _missing(exc):
                return None
            raise self._fail("move(claim)", src, exc) from exc

    def _release(self, src: str, marker: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._claim_key(src), IfMatch=marker)
        except ClientError as exc:
            # taken over after our lease ran out (or gone): the new holder releases it
            log.warning("move %s: claim marker not released: %s", self.uri(src), exc)

    def _copy_if_match(self, src_key: str, dst_key: str, etag: str, size: int, src: str) -> bool:
        source = {"Bucket": self.bucket, "Key": src_key}
        try:
            if size <= self.max_single_copy:
                self.client.copy_object(
                    Bucket=self.bucket, Key=dst_key, CopySource=source, CopySourceIfMatch=etag
                )
            else:
                self.client.copy(
                    source,
                    self.bucket,
                    dst_key,
                    ExtraArgs={"CopySourceIfMatch": etag},
                    Config=self.transfer,
                )
        except ClientError as exc:
            if _missing(exc) or _precondition(exc):
                return False
            raise self._fail("move(copy)", src, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("move(copy)", src, exc) from exc
        return True

    def list(self, prefix: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        if prefix:
            base = self._k(prefix).rstrip("/") + "/"
        else:
            base = f"{self.prefix}/" if self.prefix else ""
        kwargs = {"Bucket": self.bucket, "Prefix": base}
        if not recursive:
            kwargs["Delimiter"] = "/"
        hidden = self._k(CLAIMS_DIR) + "/"
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or key.startswith(hidden):
                        continue
                    if self.match(key, pattern):
                        out.append(self._rel(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(out)

    def delete(self, path: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(path))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", path, exc) from exc

    def exists(self, path: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(path))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise self._fail("exists", path, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("exists", path, exc) from exc
        return True

    def size(self, path: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._k(path))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("size", path, exc) from exc
        return int(head["ContentLength"])

    def upload_file(self, local_path: str | Path, dst: str) -> None:
        try:
            self.client.upload_file(
                str(local_path), self.bucket, self._k(dst), Config=self.transfer
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._fail("upload", dst, exc) from exc

    def download_file(self, src: str, local_path: str | Path) -> None:
        try:
            self.client.download_file(
                self.bucket, self._k(src), str(local_path), Config=self.transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("download", src, exc) from exc

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    # -- other readers (pyarrow, polars, fsspec / duckdb) --------------------------------------

    def _credentials(self) -> Any:
        creds = self._session.get_credentials()
        return creds.get_frozen_credentials() if creds is not None else None

    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs.S3FileSystem`` for this bucket (paths from ``arrow_path``)."""
        from pyarrow import fs as pafs

        kwargs: dict[str, Any] = {
            "region": self.region,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(
                max_attempts=self.settings.max_attempts
            ),
            "connect_timeout": self.settings.connect_timeout_s,
            "request_timeout": self.settings.read_timeout_s,
        }
        if self.settings.endpoint_url:
            url = urlparse(self.settings.endpoint_url)
            kwargs["endpoint_override"] = url.netloc or url.path
            kwargs["scheme"] = url.scheme or "https"
            kwargs["force_virtual_addressing"] = False
        creds = self._credentials()
        if creds is not None:
            kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key)
            if creds.token:
                kwargs["session_token"] = creds.token
        return pafs.S3FileSystem(**kwargs)

    def arrow_path(self, path: str) -> str:
        return f"{self.bucket}/{self._k(path)}"

    def storage_options(self) -> dict[str, str]:
        """Options for polars' object store (``pl.scan_parquet(uri, storage_options=...)``)."""
        opts = {"aws_region": self.region}
        if self.settings.endpoint_url:
            opts["aws_endpoint_url"] = self.settings.endpoint_url
            opts["aws_allow_http"] = str(self.settings.endpoint_url.startswith("http:")).lower()
            opts["aws_virtual_hosted_style_request"] = "false"
        creds = self._credentials()
        if creds is not None:
            opts.update(aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
            if creds.token:
                opts["aws_session_token"] = creds.token
        return opts

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (fsspec), e.g. for DuckDB's
        ``register_filesystem`` (DuckDB 2.0 cannot install httpfs offline)."""
        opts: dict[str, Any] = {
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {
                "retries": {
                    "total_max_attempts": self.settings.max_attempts,
                    "mode": "standard",
                },
                "s3": {"addressing_style": "path"},
            },
        }
        if self.settings.endpoint_url:
            opts["endpoint_url"] = self.settings.endpoint_url
        creds = self._credentials()
        if creds is not None:
            opts.update(key=creds.access_key, secret=creds.secret_key)
            if creds.token:
                opts["token"] = creds.token
        return opts

    def fsspec_filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.fsspec_options())
