"""`fluxforge up`: the ingestion daemon and Dagster (webserver + daemon) together.

Each child runs in its own process group (``dagster dev`` started from a non-interactive
parent ignores SIGINT and leaves children behind otherwise). Ctrl-C / SIGTERM stops intake
first (the daemon seals its active segment), then Dagster, by signalling the groups; whatever
is still alive after the grace period is killed. The Dagster instance lives in
``DAGSTER_HOME`` under the data directory, with the repository's ``dagster.yaml``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fluxforge.config import ENV_CONFIG, REPO_ROOT, Config, load_config, resolve_config_path
from fluxforge.locks import exclusive, up_lock_path
from fluxforge.pgserver import LocalPostgres, PostgresServerError

log = logging.getLogger(__name__)

# Demo settings: a segment is sealed every 10 s (about one run's wall time, so runs of a source
# do not queue behind each other) and the sensor looks every second, so a
# sealed segment is visible Parquet within ~10 s (docs/architecture.md, "Quality targets").
# Explicit env overrides win.
DEMO_ENV = {
    "FLUXFORGE_DAGSTER__SENSOR_INTERVAL_S": "1",
    "FLUXFORGE_INGESTION__SEGMENT_MAX_AGE_S": "10",
}
STOP_GRACE_S = 20.0


@dataclass
class UpSettings:
    config_path: Path
    host: str = "127.0.0.1"
    port: int = 3000
    max_seconds: float | None = None
    demo: bool = True
    env: dict[str, str] = field(default_factory=dict)


def data_dir(cfg: Config) -> Path:
    """Where local state goes: the ETL output directory, or ./fluxforge_data for S3 lakes."""
    out = cfg.storage.etl_output
    return Path(out.base_dir if out.backend == "local" else "./fluxforge_data").resolve()


def prepare_home(cfg: Config) -> Path:
    """DAGSTER_HOME under the data dir, holding the repository's instance settings."""
    home = data_dir(cfg) / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


HOT_DSN_ENV = "FLUXFORGE_HOT_STORE__DSN"


def start_hot_store(cfg: Config) -> tuple[LocalPostgres | None, str | None]:
    """The embedded PostgreSQL of the hot store, when ``hot_store.dsn`` is null and
    ``hot_store.embedded`` is true: data in ``hot_store.embedded_dir`` when set, else
    ``{data dir}/postgres``; 127.0.0.1 on ``hot_store.embedded_port``. Returns (the server if
    this call started it, its DSN). A server that cannot start is logged and `up` goes on
    without hot tables (the refinery and the SQL models do not need them)."""
    import psycopg

    hs = cfg.hot_store
    if hs.dsn or not hs.embedded:
        return None, hs.dsn or None
    where = Path(hs.embedded_dir) if "embedded_dir" in hs.model_fields_set else None
    try:
        server = LocalPostgres(
            where or data_dir(cfg) / "postgres",
            port=hs.embedded_port,
            binaries=hs.embedded_binaries,
        )
        was_running = server.running()
        server.start()
        dsn = server.ensure_database(hs.database)
    except (PostgresServerError, OSError, psycopg.Error) as exc:
        log.error(
            "embedded PostgreSQL (port %s) not usable, no hot tables this time: %s",
            hs.embedded_port,
            exc,
        )
        return None, None
    # the DSN names the 0600 password file, it holds no password (fluxforge/pgserver.py)
    log.info("hot store: embedded PostgreSQL %s (data %s)", dsn, server.data_dir)
    return (None if was_running else server), dsn


def stop_hot_store(server: LocalPostgres | None) -> None:
    if server is not None:
        log.info("stopping the embedded PostgreSQL")
        with contextlib.suppress(PostgresServerError, OSError):
            server.stop("fast")


def child_env(settings: UpSettings, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    if settings.demo:
        for key, value in DEMO_ENV.items():
            env.setdefault(key, value)
    env.update(settings.env)
    env[ENV_CONFIG] = str(settings.config_path.resolve())
    env["DAGSTER_HOME"] = str(home)
    # Every Dagster run is a fresh process that imports dagster and the code location: without
    # a bytecode cache that is ~7 s of compiling per run, most of the ready -> visible latency.
    # The cache goes under DAGSTER_HOME, so neither the venv nor the repository is written.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(home / "pycache"))
    return env


def _dagster_bin() -> str:
    local = Path(sys.executable).with_name("dagster")
    return str(local) if local.exists() else (shutil.which("dagster") or "dagster")


def commands(settings: UpSettings) -> dict[str, list[str]]:
    cfg_path = str(settings.config_path.resolve())
    return {
        "ingestion daemon": [sys.executable, "-m", "fluxforge.cli", "ingest", "--config", cfg_path],
        "dagster": [
            _dagster_bin(),
            "dev",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            settings.host,
            "-p",
            str(settings.port),
        ],
    }


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_all(procs: dict[str, subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Daemon first (stop intake, seal), then Dagster; kill what outlives the grace period."""
    for name in ("ingestion daemon", "dagster"):
        proc = procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        log.info("stopping %s (process group %d)", name, proc.pid)
        _signal_group(proc, signal.SIGTERM if name == "ingestion daemon" else signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing its process group", name, grace_s)
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)
        # children of dagster dev (webserver, daemon, code server) share its group: make sure
        # none outlives `up` (they are reparented and reaped by init once killed)
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            _signal_group(proc, signal.SIGKILL)
            time.sleep(0.1)


def run_up(settings: UpSettings, announce: Callable[[str], None] = log.info) -> int:
    """Start both, wait for a signal, `max_seconds` or a child's exit; returns an exit code."""
    cfg = load_config(settings.config_path, environ=child_env(settings, Path(".")))
    # one `up` per data dir: a second would start a second daemon and Dagster on one store
    with exclusive(up_lock_path(data_dir(cfg)), "fluxforge up", "fluxforge up"):
        return _run_up_locked(settings, cfg, announce)


def _run_up_locked(settings: UpSettings, cfg: Config, announce: Callable[[str], None]) -> int:
    home = prepare_home(cfg)
    env = child_env(settings, home)
    pg_server, hot_dsn = start_hot_store(cfg)
    if hot_dsn and not cfg.hot_store.dsn:
        env[HOT_DSN_ENV] = hot_dsn  # the Dagster code location reads it as hot_store.dsn
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    procs: dict[str, subprocess.Popen] = {}
    rc = 0
    try:
        for name, cmd in commands(settings).items():
            # cwd stays the caller's: relative paths in the config mean the same to everyone
            procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
            log.info("started %s (pid %d): %s", name, procs[name].pid, " ".join(cmd))
        demo = (
            " Demo settings: a segment sealed every 10 s, sensor every 1 s (--no-demo: the "
            "config's values)."
            if settings.demo
            else ""
        )
        announce(
            f"FluxForge is up: Dagster UI on http://{settings.host}:{settings.port} "
            f"(DAGSTER_HOME={home}, config {settings.config_path}); Ctrl-C stops both.{demo}"
        )
        deadline = None if settings.max_seconds is None else time.monotonic() + settings.max_seconds
        while not stop.is_set():
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                rc = max(procs[n].returncode for n in dead) or 1
                log.error("%s exited (code %s): stopping", dead[0], procs[dead[0]].returncode)
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.5)
    finally:
        stop_all(procs)
        stop_hot_store(pg_server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc


def settings_from_cli(
    config_path: str | None, host: str, port: int, max_seconds: float | None, demo: bool
) -> UpSettings:
    return UpSettings(resolve_config_path(config_path), host, port, max_seconds, demo)
