"""S3 storage on boto3: botocore retry modes, the transfer manager for multipart."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from fluxforge.config import S3Settings
from fluxforge.storage.base import Storage, StorageError
from fluxforge.storage.paths import safe_key

_MB = 1024 * 1024


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3Storage(Storage):
    backend = "s3"

    def __init__(self, bucket: str, settings: S3Settings | None = None, client=None) -> None:
        self.settings = settings or S3Settings()
        self.bucket = bucket
        self.prefix = safe_key(self.settings.prefix).strip("/") if self.settings.prefix else ""
        self.client = client or boto3.client(
            "s3",
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            config=BotoConfig(
                retries={
                    "max_attempts": self.settings.max_attempts,
                    "mode": self.settings.retry_mode,
                },
                connect_timeout=self.settings.connect_timeout_s,
                read_timeout=self.settings.read_timeout_s,
                s3={"addressing_style": "path"},
            ),
        )
        threshold = self.settings.multipart_threshold_mb * _MB
        self.transfer = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold)

    def _k(self, path: str) -> str:
        key = safe_key(path)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._k(path)}"

    def _fail(self, op: str, path: str, exc: Exception) -> StorageError:
        return StorageError(f"s3 {op} s3://{self.bucket}/{self._k(path)}: {exc}")

    def read_bytes(self, path: str) -> bytes:
        buf = io.BytesIO()
        try:
            self.client.download_fileobj(self.bucket, self._k(path), buf, Config=self.transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", path, exc) from exc
        return buf.getvalue()

    def write_bytes(self, path: str, data: bytes) -> None:
        try:
            self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, self._k(path), Config=self.transfer
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", path, exc) from exc

    def move(self, src: str, dst: str) -> bool:
        """Copy then delete. A second claimer finds the source gone (or loses the delete race,
        in which case its copy is identical bytes); callers treat False as 'already claimed'."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._k(src))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise self._fail("move(head)", src, exc) from exc
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._k(src)},
                self.bucket,
                self._k(dst),
                ExtraArgs={"CopySourceIfMatch": head["ETag"]},
                Config=self.transfer,
            )
        except ClientError as exc:
            if _missing(exc) or "PreconditionFailed" in str(exc):
                return False
            raise self._fail("move(copy)", src, exc) from exc
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(src))
        except ClientError as exc:
            raise self._fail("move(delete)", src, exc) from exc
        return True

    def list(self, prefix: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        base = (
            self._k(prefix).rstrip("/") + "/"
            if prefix
            else (f"{self.prefix}/" if self.prefix else "")
        )
        kwargs = {"Bucket": self.bucket, "Prefix": base}
        if not recursive:
            kwargs["Delimiter"] = "/"
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    if self.match(obj["Key"], pattern) and not obj["Key"].endswith("/"):
                        out.append(self._rel(obj["Key"]))
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
        return True

    def size(self, path: str) -> int:
        try:
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._k(path))["ContentLength"]
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("size", path, exc) from exc

    def upload_file(self, local_path: str | Path, dst: str) -> None:
        try:
            self.client.upload_file(
                str(local_path), self.bucket, self._k(dst), Config=self.transfer
            )
        except (ClientError, BotoCoreError) as exc:
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
