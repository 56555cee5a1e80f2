"""No credential ever shows up in a log line, an exception text or the CLI's stderr: S3 calls
with wrong keys against the real server and against an endpoint that is down, through the
library, the daemon and the `fluxforge` command (also with -v, which turns on DEBUG)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from fluxforge.config import S3Settings
from fluxforge.storage import StorageError
from fluxforge.storage.s3 import S3Storage
from tests._services import free_port
from tests.reliability.conftest import (
    clean_env,
    daemon_cmd,
    fluxforge_cmd,
    popen,
    record_figures,
    write_config,
)

pytestmark = pytest.mark.services

ACCESS = "AKIAFLUXFORGELEAKCHECK"
SECRET = "fluxforgeLeakCheckSecret/0123456789+abcdefXYZ"
# substrings that must never appear either (a truncated or partly masked key still leaks)
NEEDLES = (ACCESS, SECRET, SECRET[:16], SECRET[-16:], ACCESS[4:])


def _leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def _exc_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(getattr(exc, "args", ""))


def _settings(endpoint: str, region: str) -> S3Settings:
    return S3Settings(endpoint_url=endpoint, region=region, max_attempts=2, connect_timeout_s=1)


@pytest.fixture
def wrong_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_credentials_never_in_library_exceptions_or_debug_logs(
    s3_server, wrong_keys, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    bucket = s3_server.bucket("leak")
    down = f"http://127.0.0.1:{free_port()}"
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)  # botocore's DEBUG logs print signed request headers
    for endpoint in (s3_server.endpoint_url, down):
        storage = S3Storage(bucket, _settings(endpoint, s3_server.region))
        local = tmp_path / "x.bin"
        local.write_bytes(b"x" * 10)
        calls = [
            lambda s=storage: s.list("raw/ready"),
            lambda s=storage: s.read_bytes("a/b.json"),
            lambda s=storage: s.write_bytes("a/b.json", b"{}"),
            lambda s=storage: s.exists("a/b.json"),
            lambda s=storage: s.size("a/b.json"),
            lambda s=storage: s.move("a/b.json", "a/c.json"),
            lambda s=storage, p=local: s.upload_file(p, "a/x.bin"),
            lambda s=storage, p=local: s.download_file("a/x.bin", p),
        ]
        for call in calls:
            with pytest.raises(StorageError) as info:
                call()
            texts.append(_exc_text(info.value))
    logs = "\n".join(r.getMessage() + (r.exc_text or "") + str(r.args) for r in caplog.records)
    assert any(
        "InvalidAccessKeyId" in t or "SignatureDoesNotMatch" in t or "403" in t for t in texts
    )
    assert any("Could not connect" in t or "Connect" in t for t in texts)
    assert _leaks("\n".join(texts)) == []
    assert _leaks(logs) == [], "credentials in DEBUG logs"
    record_figures(
        "credentials_library",
        {"exceptions_checked": len(texts), "log_records_checked": len(caplog.records)},
    )


def _cli_config(tmp: Path, endpoint: str, bucket: str, region: str) -> Path:
    layer = {
        "backend": "s3",
        "base_dir": bucket,
        "s3": {"endpoint_url": endpoint, "region": region, "max_attempts": 2},
    }
    return write_config(
        tmp / f"cfg-{abs(hash(endpoint))}.yaml",
        {
            "storage": {
                "ingestion_storage": layer,
                "etl_storage_input": layer,
                "etl_storage_output": layer,
                "spill_dir": str(tmp / "spill"),
            },
            "sources": [{"name": "syn", "type": "synthetic", "rate": 500, "max_messages": 50}],
        },
    )


def test_credentials_never_in_cli_or_daemon_stderr(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.bucket("leak-cli")
    env = clean_env(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
    down = f"http://127.0.0.1:{free_port()}"
    outputs: list[str] = []
    codes: list[int] = []
    for endpoint in (s3_server.endpoint_url, down):
        config = str(_cli_config(tmp_path, endpoint, bucket, s3_server.region))
        for cmd in (  # -v: DEBUG logs of every library, botocore's included
            fluxforge_cmd("-v", "process", "--config", config),
            daemon_cmd(Path(config), "-v", "--max-seconds", "5"),
        ):
            proc = popen(cmd, env=env)
            out, err = proc.communicate(timeout=120)
            codes.append(proc.returncode)
            outputs.append(out.decode(errors="replace") + err.decode(errors="replace"))
    assert all(code != 0 for code in codes)  # every run failed, on S3 errors
    assert _leaks("\n".join(outputs)) == []
    record_figures(
        "credentials_cli",
        {"runs": len(outputs), "exit_codes": codes, "stderr_bytes": sum(map(len, outputs))},
    )
