"""Issue case 7: the embedded PostgreSQL admits only FluxForge.

Before, initdb ran with ``--auth=trust``: any local account connected as the superuser without
a password (and could drop the hot tables or run ``COPY ... TO PROGRAM``). Now logins need the
generated scram password from the 0600 password file, and FluxForge works as role
``fluxforge``, which is no superuser."""

from __future__ import annotations

import stat

import psycopg
import pytest

from fluxforge.pgserver import APP_ROLE, SUPERUSER
from tests.reliability.conftest import record_figures

pytestmark = pytest.mark.services


def test_embedded_pg_without_password_is_refused(pg_server) -> None:
    refused = []
    for user in (SUPERUSER, APP_ROLE, "nobody"):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{pg_server.port}/postgres").close()
        assert "password" in str(info.value)
        refused.append(user)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            f"postgresql://{SUPERUSER}:wrong@127.0.0.1:{pg_server.port}/postgres"
        ).close()
    hba = (pg_server.data_dir / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and line[0] != "#"]
    assert rules == [["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]]
    mode = stat.S_IMODE(pg_server.passfile.stat().st_mode)
    assert mode == 0o600
    record_figures(
        "embedded_pg_auth",
        {"passwordless_logins_refused": len(refused), "passfile_mode": oct(mode)},
    )


def test_embedded_pg_work_role_is_no_superuser(pg_db: str) -> None:
    assert "password=" not in pg_db and ":" not in pg_db.split("://")[1].split("@")[0]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        user, superuser = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert (user, superuser) == (APP_ROLE, False)
        # the work itself: its own tables in its own database
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY t TO PROGRAM 'id'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE DATABASE other")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE intruder LOGIN SUPERUSER")
