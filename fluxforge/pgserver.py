"""A local PostgreSQL server in a data directory: the embedded default hot store and the tests'.

Uses the server binaries already on the machine (Debian's /usr/lib/postgresql/N/bin, or PATH).
initdb refuses to run as root, so as root every server command runs as an unprivileged user
(`fluxforge` when that user exists, else `nobody`) owning the data directory. Authentication is
`trust` on 127.0.0.1 only: it is a local development server, never exposed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SUPERUSER = "postgres"


class PostgresServerError(RuntimeError):
    """The local server could not be initialised, started or stopped; names the command."""


def find_bin_dir() -> Path | None:
    """Directory holding initdb and pg_ctl: newest /usr/lib/postgresql/N/bin, else PATH."""
    env = os.environ.get("FLUXFORGE_PG_BIN")
    if env:
        return Path(env)
    root = Path("/usr/lib/postgresql")
    candidates = sorted(
        root.glob("*/bin") if root.is_dir() else [],
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    return None


def _unprivileged_user() -> str:
    for name in ("fluxforge", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresServerError("running as root and neither user 'fluxforge' nor 'nobody' exists")


class LocalPostgres:
    """Start/stop a PostgreSQL server whose data lives in `data_dir`, listening on 127.0.0.1."""

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 5433,
        bin_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        found = Path(bin_dir) if bin_dir else find_bin_dir()
        if found is None:
            raise PostgresServerError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under "
                "/usr/lib/postgresql/*/bin or on PATH: install them (Debian: apt-get install -y "
                "postgresql, see scripts/setup.sh) or set FLUXFORGE_PG_BIN"
            )
        self.bin_dir: Path = found
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.settings = settings or {}
        self.run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self.log_path = self.data_dir / "server.log"

    # -- connection strings ----------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    # -- commands ----------------------------------------------------------------------------

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        # cwd must be readable by the unprivileged user (root's cwd may not be).
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=self.data_dir.parent, check=False
        )
        if check and proc.returncode != 0:
            tail = ""
            if self.log_path.exists():
                with contextlib.suppress(OSError):
                    tail = self.log_path.read_text(errors="replace")[-2000:]
            raise PostgresServerError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{tail}"
            )
        return proc

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb (trust auth, UTF8, C locale) unless the data dir already holds a cluster."""
        if self.initialized():
            return
        created = [p for p in (self.data_dir, *self.data_dir.parents) if not p.exists()]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
            # directories created here only need to be traversable by the server's user
            for path in created[1:]:
                path.chmod(path.stat().st_mode | 0o711)
            self._check_reachable(owner.pw_uid)
        self.data_dir.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            # TCP only: the default socket dir (/var/run/postgresql) may not be writable.
            "unix_socket_directories": "''",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# fluxforge local server\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        log.info("initialised PostgreSQL cluster in %s", self.data_dir)

    def _check_reachable(self, uid: int) -> None:
        for path in self.data_dir.parents:
            st = path.stat()
            if st.st_uid != uid and not st.st_mode & 0o001:
                raise PostgresServerError(
                    f"{path} is not traversable by user {self.run_as!r}, which runs PostgreSQL "
                    f"because initdb refuses root: put the data dir ({self.data_dir}) elsewhere "
                    f"(hot_store.embedded_dir) or allow traversal (chmod o+x {path})"
                )

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def start(self) -> None:
        """Start (waiting until it accepts connections); a no-op when already running."""
        if not self.initialized():
            self.init()
        if self.running():
            return
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            "120",
            "-o",
            f"-p {self.port}",
            "start",
        )
        log.info("PostgreSQL running on 127.0.0.1:%s (data %s)", self.port, self.data_dir)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m smart|fast|immediate; `immediate` is a crash (recovery on next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode {mode!r}: expected smart, fast or immediate")
        if not self.running():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def kill_leftovers(self) -> None:
        """SIGKILL the postmaster if it is still alive (test teardown safety net)."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def ensure_database(self, name: str) -> str:
        """Create database `name` if missing; returns its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)


def embedded_data_dir(cfg) -> Path:
    """``hot_store.embedded_dir`` when set in the config, else ``{data dir}/postgres`` where the
    data dir is the local ETL output directory (``./fluxforge_data`` for an S3 lake): the same
    place ``fluxforge up`` (fluxforge.up.start_hot_store) keeps it, so CLI commands run next to
    a running demo find its server instead of starting a second one on the same port."""
    hs = cfg.hot_store
    if "embedded_dir" in hs.model_fields_set:
        return Path(hs.embedded_dir).absolute()
    out = cfg.storage.etl_output
    base = out.base_dir if out.backend == "local" else "./fluxforge_data"
    return (Path(base) / "postgres").resolve()


def embedded_server(cfg) -> LocalPostgres:
    """The embedded local server of a config (``embedded_data_dir`` / ``embedded_port``)."""
    return LocalPostgres(embedded_data_dir(cfg), port=cfg.hot_store.embedded_port)


@contextlib.contextmanager
def hot_dsn(cfg) -> Iterator[str]:
    """The hot store DSN: ``hot_store.dsn``, else the embedded server (started here, and
    stopped again on exit if it was not already running), database ``hot_store.database``."""
    if cfg.hot_store.dsn:
        yield cfg.hot_store.dsn
        return
    if not cfg.hot_store.embedded:
        from fluxforge.config import ConfigError

        raise ConfigError(
            "hot_store.dsn is null and hot_store.embedded is false: set hot_store.dsn "
            "(postgresql://user@host:port/db) or enable the embedded server"
        )
    server = embedded_server(cfg)
    was_running = server.running()
    server.start()
    try:
        yield server.ensure_database(cfg.hot_store.database)
    finally:
        if not was_running:
            server.stop("fast")


def running_hot_dsn(cfg) -> str | None:
    """The hot store DSN for readers: ``hot_store.dsn``, else the embedded server's when it is
    already running (``fluxforge up``); None otherwise. Never starts a server."""
    if cfg.hot_store.dsn:
        return cfg.hot_store.dsn
    if not cfg.hot_store.embedded:
        return None
    server = embedded_server(cfg)
    if not (server.initialized() and server.running()):
        return None
    return server.dsn_for(cfg.hot_store.database)
