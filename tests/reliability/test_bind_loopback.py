"""Every server FluxForge starts listens on 127.0.0.1 unless configured otherwise: the Dagster UI
and its code server (`fluxforge up` -> `dagster dev`), the embedded PostgreSQL. Checked on the
live processes' listening sockets (/proc/net/tcp*), not only on their command lines."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from fluxforge.config import REPO_ROOT
from fluxforge.up import UpSettings, commands
from tests._services import free_port
from tests.reliability.conftest import clean_env, fluxforge_cmd, popen, record_figures, write_config

LIBRARY_DIRS = ("fluxforge", "fluxforge_dagster", "ingestion_daemon")


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) for every TCP socket in LISTEN state."""
    out: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for row in fh:
                cols = row.split()
                if cols[3] != "0A":  # LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = b"".join(
                    bytes.fromhex(hexaddr[i : i + 8])[::-1] for i in range(0, len(hexaddr), 8)
                )
                out[int(cols[9])] = (str(ipaddress.ip_address(raw)), int(hexport, 16))
    return out


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket the processes hold."""
    listen = _listening_inodes()
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in listen:
                out.append((pid, *listen[int(m.group(1))]))
    return sorted(set(out))


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_bind_defaults_in_code_are_loopback(tmp_path: Path) -> None:
    from fluxforge.cli import up

    host_opt = next(p for p in up.params if p.name == "host")
    assert host_opt.default == "127.0.0.1"
    cmd = commands(UpSettings(tmp_path / "c.yaml"))["dagster"]
    assert cmd[cmd.index("-h") + 1] == "127.0.0.1"
    other = commands(UpSettings(tmp_path / "c.yaml", host="0.0.0.0"))["dagster"]
    assert other[other.index("-h") + 1] == "0.0.0.0"  # configurable on purpose
    wildcard = [
        str(p.relative_to(REPO_ROOT))
        for d in LIBRARY_DIRS
        for p in (REPO_ROOT / d).rglob("*.py")
        if "0.0.0.0" in p.read_text() or "'::'" in p.read_text()
    ]
    assert wildcard == []  # no library code binds every interface by itself


@pytest.mark.services
def test_bind_embedded_postgres_listens_on_loopback_only(pg_server) -> None:
    pid = _postmaster_pid(pg_server.data_dir)
    sockets = _listening({pid})
    assert sockets and all(_is_loopback(addr) for _, addr, _ in sockets), sockets
    assert any(port == pg_server.port for _, _, port in sockets)


def _wait_port(port: int, proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
@pytest.mark.services
def test_bind_fluxforge_up_every_listening_socket_is_loopback(tmp_path: Path) -> None:
    ui_port, pg_port = free_port(), free_port()
    data = tmp_path / "data"
    # the server runs as an unprivileged user: its directory must not sit under root-only dirs
    pg_dir = Path(tempfile.mkdtemp(prefix="fluxforge-up-pg-")) / "data"
    pg_dir.parent.chmod(0o711)
    config = write_config(
        tmp_path / "up.yaml",
        {
            "storage": {"base_dir": str(data), "spill_dir": str(tmp_path / "spill")},
            "sources": [{"name": "synthetic", "type": "synthetic", "rate": 50}],
            "hot_store": {
                "embedded": True,
                "embedded_port": pg_port,
                "embedded_dir": str(pg_dir),
            },
        },
    )
    env = clean_env(DAGSTER_HOME=str(tmp_path / "dh"))
    proc = popen(
        fluxforge_cmd(
            "up", "--config", str(config), "--port", str(ui_port), "--max-seconds", "150"
        ),
        env=env,
    )
    try:
        assert _wait_port(ui_port, proc, timeout=120), "Dagster UI did not come up"
        time.sleep(2)  # let dagster dev start its code server and daemon too
        pids = _descendants(proc.pid)
        deadline = time.monotonic() + 30
        while not (pg_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        pids.add(_postmaster_pid(pg_dir))  # pg_ctl daemonizes it: not a descendant of `up`
        sockets = _listening(pids)
        ports = {port for _, _, port in sockets}
        assert {ui_port, pg_port} <= ports
        exposed = [s for s in sockets if not _is_loopback(s[1])]
        assert exposed == [], f"servers listening beyond loopback: {exposed}"
        record_figures(
            "bind_loopback_up",
            {
                "processes": len(pids),
                "listening_sockets": [f"{addr}:{port}" for _, addr, port in sockets],
            },
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
        shutil.rmtree(pg_dir.parent, ignore_errors=True)
