"""The whole stack as `fluxforge up` runs it: `dagster dev` (webserver + daemon) on the code
location; the real sensor picks up replayed segments and the run queue refines them; then a
backfill launched through the UI's GraphQL API rebuilds the partitions byte for byte."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster_helpers import (
    SMALL_CAPTURES,
    lake_bytes,
    link_captures,
    ready_names,
    replay,
    write_config,
)

from fluxforge.config import REPO_ROOT, load_config
from fluxforge_dagster.defs.checks import TABLES  # every asset of the refinery multi-asset

pytestmark = [pytest.mark.slow, pytest.mark.services]

BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
RUNS = """
{ runsOrError(filter: {pipelineName: "refinery_job"}) {
    ... on Runs { results { status tags { key value } } } } }"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gql(port: int, query: str, variables: dict | None = None) -> dict:
    """One GraphQL call; a 5xx answer (the webserver briefly busy while the code location
    reloads, seen on a loaded 2-core machine) is retried for up to a minute."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or time.monotonic() > deadline:
                raise AssertionError(f"GraphQL {exc.code}: {exc.read()[:3000]!r}") from exc
            time.sleep(2)


def _wait(what: str, ok, timeout_s: float = 300.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"gave up waiting for {what}\n{tail}")
        time.sleep(1)


@pytest.fixture
def stack(tmp_path: Path, captures: Path, clean_env: None) -> Iterator[tuple[Path, int]]:
    path = write_config(
        tmp_path,
        link_captures(tmp_path, captures, SMALL_CAPTURES),
        dagster={"sensor_interval_s": 1, "max_segments_per_run": 20},
    )
    assert replay(load_config(path, environ={})) == 0
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXFORGE_")}
    env.update(FLUXFORGE_CONFIG=str(path), DAGSTER_HOME=str(home))
    # as `fluxforge up` does: a bytecode cache, or every run compiles dagster from source
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path.parent / "pycache")
    port = _free_port()
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "dagster.log"
    proc = subprocess.Popen(
        [
            str(dagster),
            "dev",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield tmp_path, port
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.2)


def test_stack_sensor_refines_backlog_then_backfill_rebuilds_identical(stack):
    root, port = stack
    segments = ready_names(root)
    log = root / "dagster.log"
    _wait(
        "the sensor's runs to archive every segment",
        lambda: ready_names(root, state="archive") == segments,
        log=log,
    )

    def runs() -> list[dict]:
        return _gql(port, RUNS)["data"]["runsOrError"]["results"]

    _wait("the runs to finish", lambda: all(r["status"] in ("SUCCESS", "FAILURE") for r in runs()))
    done = runs()
    assert done and all(r["status"] == "SUCCESS" for r in done)
    keys = {t["value"] for r in done for t in r["tags"] if t["key"] == "dagster/run_key"}
    assert all(k.startswith("replay:segment_") for k in keys)
    before = lake_bytes(root)
    assert len(before) > 5

    shutil.rmtree(root / "data" / "processed")
    dates = sorted({f"{n[8:12]}-{n[12:14]}-{n[14:16]}" for n in segments})
    params = {
        "partitionNames": [f"{d}|replay" for d in dates],
        "assetSelection": [{"path": [t]} for t in [*TABLES, "coverage"]],
        "fromFailure": False,
    }
    launched = _gql(port, BACKFILL, {"params": params})["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def status() -> str:
        got = _gql(port, STATUS, {"id": backfill_id})["data"]["partitionBackfillOrError"]
        return got["status"]

    _wait("the backfill", lambda: status() not in ("REQUESTED", "CANCELING", "FAILING"), log=log)
    assert status() in ("COMPLETED", "COMPLETED_SUCCESS")
    assert lake_bytes(root) == before
