"""`fluxforge up`: both processes start, the UI answers on 127.0.0.1, SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.services]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_sigterm_stops_daemon_and_dagster_cleanly(tmp_path: Path):
    cfg = {
        "storage": {"backend": "local", "base_dir": str(tmp_path / "data")},
        "sources": [{"name": "synthetic", "type": "synthetic", "rate": 50, "seed": 3}],
    }
    path = tmp_path / "ff.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxforge.cli", "up", "--config", str(path), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps({"query": "{ version }"}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(req, timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "UI never answered"
                time.sleep(0.5)
        text = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}" in text
        assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").is_file()
        children = [
            int(line.split("pid ")[1].split(")")[0])
            for line in text.splitlines()
            if "started " in line and "(pid " in line
        ]
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(_group_alive(pid) for pid in children)
        # the daemon sealed what it had: nothing left in active/
        assert not list((tmp_path / "data" / "raw" / "active").rglob("segment_*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for line in (tmp_path / "up.log").read_text().splitlines():
            if "started " in line and "(pid " in line:
                pid = int(line.split("pid ")[1].split(")")[0])
                if _group_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
