"""Issue case 11 (hot store): two ``hot load`` at once crashed one with a 41-line traceback (and
the embedded server started by one was stopped under the other); PostgreSQL stopped mid-load
gave a raw traceback. Now the second writer fails at once naming the holder, and a lost server
is one line naming the next step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from fluxforge.hot import HotStore, HotStoreUnavailable
from tests.reliability.conftest import (
    REPO,
    clean_env,
    fluxforge_cmd,
    popen,
    record_figures,
    write_config,
)

pytestmark = pytest.mark.services


def test_hot_load_second_writer_fails_at_once_naming_the_holder(tmp_path: Path, pg_db: str) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"storage": {"base_dir": str(tmp_path / "data")}, "hot_store": {"dsn": pg_db}},
    )
    # the first writer: the same code path as `hot load`, held open for a while
    holder = popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from fluxforge.config import load_config\n"
            "from fluxforge.pgserver import hot_dsn\n"
            f"with hot_dsn(load_config({str(config)!r}), 'fluxforge hot load'):\n"
            "    print('loading', flush=True); time.sleep(120)",
        ]
    )
    try:
        assert holder.stdout.readline().strip() == b"loading"
        second = subprocess.run(
            fluxforge_cmd("hot", "load", "--config", str(config)),
            cwd=REPO,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert "Traceback" not in second.stderr
        said = [ln for ln in second.stderr.splitlines() if ln.startswith("fluxforge")]
        assert len(said) == 1 and f"pid {holder.pid}" in said[0], second.stderr
        for cmd in (("rotate",), ("hot", "load")):
            other = subprocess.run(
                fluxforge_cmd(*cmd, "--config", str(config)),
                cwd=REPO,
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert other.returncode != 0 and "already running" in other.stderr
    finally:
        holder.kill()
        holder.wait(timeout=30)
    after = subprocess.run(
        fluxforge_cmd("hot", "load", "--config", str(config)),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert after.returncode == 0, after.stderr  # the holder died: its lock went with it
    record_figures("hot_load_lock", {"second_exit_code": second.returncode, "lines_said": 1})


def test_hot_store_server_stopped_mid_operation_is_one_line(pg_server, pg_db: str) -> None:
    store = HotStore(pg_db)
    try:
        with pytest.raises(HotStoreUnavailable) as info, store.connect() as conn:
            conn.execute("SELECT 1")
            pg_server.stop("immediate")
            conn.execute("SELECT 1")
    finally:
        pg_server.start()
    text = str(info.value)
    assert "\n" not in text and "start PostgreSQL" in text
    assert isinstance(info.value, psycopg.OperationalError)  # callers retrying on it still do
    assert info.value.__cause__ is None
