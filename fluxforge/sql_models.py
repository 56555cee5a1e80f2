"""The SQL models' dbt commands (``fluxforge sql run|test|build``): thin wrappers over dbt-core's
``dbtRunner`` on the project ``dbt_like_sql/`` with the profile generated from the FluxForge
config (``fluxforge.dbt_profile``).

    dbt build --project-dir dbt_like_sql --profiles-dir <profiles dir> [--vars '{dates: [D]}']

is the same thing from a shell (``fluxforge sql profile`` writes the profile and prints its
folder). dbt's own output (target/, logs/) goes beside the DuckDB database, not into the
repository.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fluxforge.config import Config
from fluxforge.dbt_profile import PROJECT_DIR, default_profiles_dir, duckdb_path, write_profiles

COMMANDS = ("run", "test", "build", "parse", "ls", "compile")


class SqlModelsError(RuntimeError):
    """dbt could not run the command at all (bad project, bad selection, bad dates)."""


@dataclass
class NodeResult:
    name: str
    kind: str  # model | test
    status: str  # success | pass | fail | warn | error | skipped
    failures: int = 0
    message: str = ""
    seconds: float = 0.0


@dataclass
class SqlResult:
    command: str
    ok: bool
    nodes: list[NodeResult] = field(default_factory=list)

    def node(self, name: str) -> NodeResult:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no result for {name!r}; have {[n.name for n in self.nodes]}")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.status] = out.get(n.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "ok": self.ok,
            "counts": self.counts(),
            "nodes": [asdict(n) for n in self.nodes],
        }


def check_dates(dates: Iterable[str] | None) -> list[str] | None:
    """ISO dates (YYYY-MM-DD), validated; None stays None (every date)."""
    if dates is None:
        return None
    out = []
    for d in dates:
        try:
            out.append(date.fromisoformat(str(d)).isoformat())
        except ValueError:
            raise SqlModelsError(f"date {d!r}: expected an ISO date YYYY-MM-DD") from None
    return sorted(set(out))


def dbt_args(
    cfg: Config,
    command: str,
    select: Iterable[str] | None = None,
    dates: Iterable[str] | None = None,
    full_refresh: bool = False,
    project_dir: str | os.PathLike[str] | None = None,
    profiles_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The dbt command line (without ``dbt``) for `cfg`; writes the profile first."""
    if command not in COMMANDS:
        raise SqlModelsError(f"dbt command {command!r}: allowed {', '.join(COMMANDS)}")
    profiles = Path(profiles_dir) if profiles_dir else default_profiles_dir(cfg)
    write_profiles(cfg, profiles)
    args = [
        command,
        "--project-dir",
        str(Path(project_dir or PROJECT_DIR).resolve()),
        "--profiles-dir",
        str(profiles),
        "--target-path",
        str(profiles / "target"),
        "--log-path",
        str(profiles / "logs"),
    ]
    chosen = check_dates(dates)
    if chosen is not None:
        args += ["--vars", json.dumps({"dates": chosen})]
    selection = list(select or [])
    if selection:
        args += ["--select", *selection]
    if full_refresh and command in ("run", "build"):
        args.append("--full-refresh")
    return args


def _node(result: Any) -> NodeResult:
    node = result.node
    status = str(getattr(result.status, "value", result.status)).lower()
    return NodeResult(
        name=node.name,
        kind=str(getattr(node.resource_type, "value", node.resource_type)),
        status=status,
        failures=int(result.failures or 0),
        message=str(result.message or "") if status not in ("success", "pass") else "",
        seconds=round(float(result.execution_time or 0.0), 3),
    )


def _release_duckdb() -> None:
    """Let go of the DuckDB database dbt-duckdb keeps open in this process after a command, so
    the caller (a test, the reader) can open the file itself: the environment closes its
    connection when it is collected."""
    import gc

    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.adapters.factory import reset_adapters

    DuckDBConnectionManager.close_all_connections()
    reset_adapters()
    gc.collect()


def invoke(
    cfg: Config,
    command: str,
    select: Iterable[str] | None = None,
    dates: Iterable[str] | None = None,
    full_refresh: bool = False,
    project_dir: str | os.PathLike[str] | None = None,
) -> SqlResult:
    """Run one dbt command in-process. Raises SqlModelsError when dbt could not start it (its
    message names the cause); model and test failures are in the result (``ok`` False)."""
    from dbt.cli.main import dbtRunner

    select = list(select or [])
    args = dbt_args(cfg, command, select, dates, full_refresh, project_dir)
    try:
        res = dbtRunner().invoke([*args, "--quiet", "--no-use-colors"])
    finally:
        _release_duckdb()
    if res.exception is not None:
        raise SqlModelsError(f"dbt {command}: {res.exception}")
    nodes = []
    if res.result is not None and hasattr(res.result, "results"):
        # on-run-start hooks report as "operation" nodes: not models or tests
        nodes = [n for n in map(_node, res.result.results) if n.kind != "operation"]
    if command in ("run", "test", "build") and not nodes:
        if res.success is False:
            raise SqlModelsError(f"dbt {command} failed before running any node (see dbt's log)")
        if select:
            raise SqlModelsError(f"--select {' '.join(select)}: no model or test matches")
    return SqlResult(command=command, ok=bool(res.success), nodes=nodes)


def manifest(cfg: Config, project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The project's ``manifest.json`` (for dagster-dbt), parsed again with ``dbt parse`` when
    it is missing or older than a file of the project."""
    target = default_profiles_dir(cfg) / "target" / "manifest.json"
    root = Path(project_dir or PROJECT_DIR)
    skip = ("target", "logs", "dbt_packages")
    files = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in skip]
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    profile = write_profiles(cfg, default_profiles_dir(cfg))
    newest = max(newest, profile.stat().st_mtime)
    if not target.is_file() or target.stat().st_mtime < newest:
        invoke(cfg, "parse", project_dir=project_dir)
    if not target.is_file():
        raise SqlModelsError(f"dbt parse wrote no manifest at {target}")
    return target


def missing_relations(cfg: Config, names: Iterable[str]) -> list[str]:
    """Which of `names` (models) the DuckDB database does not hold yet. A run that builds the
    marts alone needs the staging views to exist (built once, by any earlier run)."""
    import duckdb

    wanted = sorted(set(names))
    path = duckdb_path(cfg)
    if not path.is_file():
        return wanted
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.sql("select table_name from information_schema.tables").fetchall()
    have = {r[0] for r in rows}
    return [n for n in wanted if n not in have]


def run(cfg: Config, **kwargs: Any) -> SqlResult:
    """``dbt run``: build the selected models (all by default)."""
    return invoke(cfg, "run", **kwargs)


def test(cfg: Config, **kwargs: Any) -> SqlResult:
    """``dbt test``: the YAML data tests and singular tests (of the selected models)."""
    return invoke(cfg, "test", **kwargs)


def build(cfg: Config, **kwargs: Any) -> SqlResult:
    """``dbt build``: models and their tests in dependency order (a failing test skips what is
    downstream of it)."""
    return invoke(cfg, "build", **kwargs)
