"""Issue case 8: a credential never reaches a log, a CLI message, ``--json`` output or an
exception text, also when the DSN or URL carrying it is malformed.

Before: libpq echoed malformed DSNs (password included) into tracebacks and ``fluxforge status``
(text and ``--json``), and with ``-v`` botocore's debug lines printed an ``endpoint_url``'s
``user:password@``. Now one function (fluxforge/redact.py) masks them everywhere."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import psycopg
import pytest

from fluxforge.hot import HotStore, HotStoreError
from fluxforge.redact import install_log_redaction, redact, register_dsn_secrets
from tests._services import free_port
from tests.reliability.conftest import clean_env, fluxforge_cmd, record_figures, write_config

SECRET = "Hunter2xQzPw9"

# what operators type and what libraries echo, malformed ones included
MALFORMED = [
    f"postgresql://ff:{SECRET}@[127.0.0.1/db",  # unbalanced IPv6 bracket: libpq echoes it whole
    f"postgresql:/ff:{SECRET}@127.0.0.1/db",  # one slash: 'missing "=" after ...' echo
    f"ff:{SECRET}@127.0.0.1:5432/db",  # no scheme
    f"postgresql://ff:{SECRET}@127.0.0.1:1/db?foo=bar",
    f"postgresql://ff:p@{SECRET}/x@host/db",  # '@' and '/' inside the password
    f"host=127.0.0.1 password={SECRET} port=x",
    f"host=127.0.0.1 password='{SECRET} dbname=x",  # unterminated quote
    f'{{"dsn": "x", "password": "{SECRET}"}}',
    f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:9000/bucket",
    f"https://s3.example/b/k?X-Amz-Credential=AKIA%2F{SECRET}&X-Amz-Signature={SECRET}",
    f"https://h/p?user=a&password={SECRET}&x=1",
    f"Credential=AKIA/{SECRET}/us-east-1/s3/aws4_request, Signature={SECRET}",
    f"aws_secret_access_key = {SECRET}",
    f"PGPASSWORD={SECRET} psql",
]


def _libpq_texts() -> list[str]:
    out = []
    for dsn in MALFORMED[:7]:
        register_dsn_secrets(dsn)  # what HotStore does with the DSN it is given
        try:
            psycopg.connect(dsn, connect_timeout=1).close()
        except psycopg.Error as exc:
            out.append(str(exc))
    return out


def test_redact_masks_every_malformed_input_and_libpq_echo() -> None:
    echoes = _libpq_texts()
    assert any(SECRET in text for text in echoes)  # libpq really echoes some of them
    leaked = [t for t in MALFORMED + echoes if SECRET in redact(t)]
    assert leaked == []
    # what is not a secret stays readable
    assert redact("postgresql://ff@127.0.0.1:5433/db?passfile=/x/p") == (
        "postgresql://ff@127.0.0.1:5433/db?passfile=/x/p"
    )
    record_figures(
        "redaction_inputs", {"inputs": len(MALFORMED), "libpq_echoes": len(echoes), "leaked": 0}
    )


def test_redaction_hot_store_errors_and_log_records(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    texts = []
    for dsn in MALFORMED[:7]:
        with pytest.raises(HotStoreError) as info, HotStore(dsn).connect():
            pass
        assert info.value.__cause__ is None and info.value.__suppress_context__
        texts.append(str(info.value))
        logging.getLogger("fluxforge.test").error("connect %s failed: %s", dsn, info.value)
    assert all("start PostgreSQL" in t for t in texts)
    assert [t for t in texts if SECRET in t] == []
    assert SECRET not in caplog.text


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        fluxforge_cmd(*args, "--config", str(cfg)),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_redaction_status_and_hot_load_with_malformed_dsn(tmp_path: Path) -> None:
    outputs = []
    for n, dsn in enumerate(MALFORMED[:2]):
        cfg = write_config(
            tmp_path / f"c{n}.yaml",
            {"storage": {"base_dir": str(tmp_path / "data")}, "hot_store": {"dsn": dsn}},
        )
        status = _cli(cfg, "status", "--json")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert "error" in info["hot_tables"]
        text = _cli(cfg, "status")
        load = _cli(cfg, "hot", "load")
        assert load.returncode != 0
        assert "Traceback" not in load.stderr
        said = [ln for ln in load.stderr.splitlines() if ln.startswith("fluxforge hot:")]
        assert len(said) == 1 and "start PostgreSQL" in said[0], load.stderr
        outputs += [status.stdout, status.stderr, text.stdout, text.stderr, load.stderr]
    assert [o for o in outputs if SECRET in o] == []
    record_figures("redaction_cli", {"commands": len(outputs) // 5 * 3, "leaked": 0})


def test_redaction_endpoint_url_credentials_not_in_verbose_logs(tmp_path: Path) -> None:
    endpoint = f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:{free_port()}"
    layer = {
        "backend": "s3",
        "base_dir": "bucket",
        "s3": {"endpoint_url": endpoint, "region": "us-east-1", "max_attempts": 1},
    }
    cfg = write_config(
        tmp_path / "s3.yaml",
        {
            "storage": {
                "ingestion_storage": layer,
                "etl_storage_input": layer,
                "etl_storage_output": layer,
            }
        },
    )
    env = clean_env(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY=SECRET)
    proc = subprocess.run(
        fluxforge_cmd("-v", "process", "--config", str(cfg)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert SECRET not in proc.stdout + proc.stderr
