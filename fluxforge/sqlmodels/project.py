"""The dbt-like SQL project: parse ``project.yml``, macros, models, YAML tests and singular tests;
render them with Jinja (``ref()`` / ``source()`` / ``config()`` and the project's macros, see
render.py); order the models by their references.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fluxforge.config import REPO_ROOT
from fluxforge.sqlmodels.errors import CycleError as CycleError
from fluxforge.sqlmodels.errors import ProjectError as ProjectError
from fluxforge.sqlmodels.render import Renderer
from fluxforge.sqlmodels.render import quote_ident as quote_ident
from fluxforge.sqlmodels.render import source_relation as source_relation

DEFAULT_PROJECT_DIR = REPO_ROOT / "dbt_like_sql"
MATERIALIZATIONS = ("view", "table")
GENERIC_TESTS = (
    "not_null",
    "unique",
    "accepted_values",
    "accepted_range",
    "unique_combination_of_columns",
)
PARTITION_COLUMNS = ("exchange", "symbol", "date")
SEVERITIES = ("error", "warn")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CONFIG_KEYS = ("materialized", "partition_by", "order_by", "enabled")


@dataclass(frozen=True)
class DataTest:
    """One data test. Generic tests have a kind and arguments; singular ones carry their SQL."""

    name: str
    kind: str  # one of GENERIC_TESTS, or "singular"
    model: str | None  # the model tested (None for a singular test over several models)
    column: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    sql: str | None = None  # singular tests: rendered SQL returning the failing rows
    refs: tuple[str, ...] = ()  # models the test reads
    path: str = ""


@dataclass
class Model:
    """One model: its file, raw and rendered SQL, references and resolved config."""

    name: str
    path: str  # relative to the project dir
    raw_sql: str
    sql: str  # rendered: ref() -> quoted model name, source() -> quoted source view
    refs: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]
    materialized: str = "table"
    partition_by: tuple[str, ...] = ()
    order_by: tuple[str, ...] = ()
    description: str = ""
    tests: list[DataTest] = field(default_factory=list)

    @property
    def deps(self) -> tuple[str, ...]:
        """Upstream models (the ref() graph); Dagster asset deps come from here."""
        return self.refs

    @property
    def group(self) -> str:
        """The model's folder under models/ (``staging``, ``marts``): a natural asset group."""
        parts = Path(self.path).parts
        return parts[1] if len(parts) > 2 else "models"


@dataclass
class Project:
    name: str
    root: Path
    models: dict[str, Model]
    sources: dict[str, tuple[str, ...]]  # source name -> its tables
    singular_tests: list[DataTest]
    macros: dict[str, str] = field(default_factory=dict)  # macro name -> file defining it

    @property
    def order(self) -> list[str]:
        """Model names in a deterministic topological order (dependencies first)."""
        return topological_order({m.name: m.refs for m in self.models.values()})

    @property
    def tests(self) -> list[DataTest]:
        out = [t for name in self.order for t in self.models[name].tests]
        return out + list(self.singular_tests)

    def tests_for(self, model: str) -> list[DataTest]:
        """Tests that belong to a model (its YAML tests; a singular test belongs to the last of
        its refs in run order, i.e. it runs once everything it reads is built)."""
        return [t for t in self.tests if test_owner(self, t) == model]

    def select(self, selectors: Iterable[str] | None) -> list[str]:
        """Model names for dbt-style selectors, in run order: ``name``, ``+name`` (with its
        upstream), ``name+`` (with its downstream). None or empty selects every model."""
        if not selectors:
            return self.order
        chosen: set[str] = set()
        for raw in selectors:
            up, down = raw.startswith("+"), raw.endswith("+")
            name = raw.strip("+")
            if name not in self.models:
                raise ProjectError(
                    f"--select {raw!r}: no model {name!r}; models: {sorted(self.models)}"
                )
            chosen.add(name)
            if up:
                chosen |= self.upstream(name)
            if down:
                chosen |= self.downstream(name)
        return [n for n in self.order if n in chosen]

    def upstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.models[name].refs)
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(self.models[cur].refs)
        return seen

    def downstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            cur = stack.pop()
            for m in self.models.values():
                if cur in m.refs and m.name not in seen:
                    seen.add(m.name)
                    stack.append(m.name)
        return seen


def test_owner(project: Project, test: DataTest) -> str | None:
    if test.model is not None:
        return test.model
    order = project.order
    return max(test.refs, key=order.index) if test.refs else None


def topological_order(graph: dict[str, Iterable[str]]) -> list[str]:
    """Kahn's algorithm by generations (all sources first, then what they feed, ...), names
    sorted within a generation; CycleError names a cycle."""
    deps = {n: set(d) for n, d in graph.items()}
    users: dict[str, list[str]] = {n: [] for n in graph}
    for node, ups in deps.items():
        for up in ups:
            users[up].append(node)
    remaining = {n: len(d) for n, d in deps.items()}
    level = sorted(n for n, k in remaining.items() if k == 0)
    out: list[str] = []
    while level:
        out.extend(level)
        nxt = []
        for node in level:
            for user in users[node]:
                remaining[user] -= 1
                if remaining[user] == 0:
                    nxt.append(user)
        level = sorted(nxt)
    if len(out) < len(deps):
        done = set(out)
        raise CycleError(_find_cycle({n: deps[n] for n in deps if n not in done}))
    return out


def _find_cycle(deps: dict[str, set[str]]) -> list[str]:
    """One cycle among the nodes left by Kahn's algorithm (each has an unresolved dependency)."""
    start = min(deps)
    path = [start]
    index = {start: 0}
    cur = start
    while True:
        cur = min(d for d in deps[cur] if d in deps)
        if cur in index:
            return [*path[index[cur] :], cur]
        index[cur] = len(path)
        path.append(cur)


# --------------------------------------------------------------------------------------------
# loading


def _read_yaml(path: Path, root: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path.relative_to(root)}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path.relative_to(root)}: top level must be a mapping")
    return data


def _folder_config(project_cfg: dict[str, Any], rel_parts: tuple[str, ...]) -> dict[str, Any]:
    """``models: {staging: {+materialized: view}}`` applied along the model's folder path."""
    out: dict[str, Any] = {}
    node = project_cfg.get("models") or {}
    for part in ("", *rel_parts):
        if part:
            node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        out.update({k[1:]: v for k, v in node.items() if isinstance(k, str) and k.startswith("+")})
    return out


def _check_config(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown:
        raise ProjectError(f"{where}: unknown config keys {unknown}; allowed {list(_CONFIG_KEYS)}")
    mat = cfg.get("materialized", "table")
    if mat not in MATERIALIZATIONS:
        raise ProjectError(f"{where}: materialized={mat!r}; allowed {list(MATERIALIZATIONS)}")
    part = cfg.get("partition_by") or []
    if isinstance(part, str):
        part = [part]
    bad = [p for p in part if p not in PARTITION_COLUMNS]
    if bad or list(part) != [p for p in PARTITION_COLUMNS if p in part]:
        raise ProjectError(
            f"{where}: partition_by={part!r}; allowed: columns of {list(PARTITION_COLUMNS)} "
            "in that order (the lake's hive layout)"
        )
    order = cfg.get("order_by") or []
    if isinstance(order, str):
        order = [order]
    return {**cfg, "materialized": mat, "partition_by": tuple(part), "order_by": tuple(order)}


def _generic_tests(entries: Any, model: str, column: str | None, where: str) -> Iterable[DataTest]:
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ProjectError(f"{where}: tests must be a list")
    for entry in entries:
        if isinstance(entry, str):
            kind, args = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            kind, args = next(iter(entry.items()))
            args = dict(args or {})
        else:
            raise ProjectError(f"{where}: a test is a name or a one-key mapping, got {entry!r}")
        if kind not in GENERIC_TESTS:
            raise ProjectError(f"{where}: unknown test {kind!r}; allowed {list(GENERIC_TESTS)}")
        severity = str((args.pop("config", None) or {}).get("severity", "error")).lower()
        if severity not in SEVERITIES:
            raise ProjectError(f"{where}: severity={severity!r}; allowed {list(SEVERITIES)}")
        if column is None and kind != "unique_combination_of_columns":
            raise ProjectError(f"{where}: {kind} is a column test; put it under a column")
        if kind == "accepted_values" and not isinstance(args.get("values"), list):
            raise ProjectError(f"{where}: accepted_values needs values: [...]")
        if kind == "accepted_range" and "min" not in args and "max" not in args:
            raise ProjectError(f"{where}: accepted_range needs min and/or max")
        if kind == "unique_combination_of_columns" and not isinstance(
            args.get("combination_of_columns"), list
        ):
            raise ProjectError(f"{where}: unique_combination_of_columns needs a column list")
        suffix = column if column else "_".join(args["combination_of_columns"])
        yield DataTest(
            name=f"{kind}_{model}_{suffix}",
            kind=kind,
            model=model,
            column=column,
            args=args,
            severity=severity,
            refs=(model,),
            path=where,
        )


def load_project(path: str | Path | None = None) -> Project:
    """Parse and validate the project at `path` (default: the repository's dbt_like_sql/)."""
    root = Path(path) if path else DEFAULT_PROJECT_DIR
    project_file = root / "project.yml"
    if not project_file.is_file():
        raise ProjectError(f"no project.yml in {root}")
    pcfg = _read_yaml(project_file, root)
    model_dirs = [root / d for d in pcfg.get("model-paths", ["models"])]
    test_dirs = [root / d for d in pcfg.get("test-paths", ["tests"])]
    macro_dirs = [root / d for d in pcfg.get("macro-paths", ["macros"])]

    # macros first: every model and singular test may call any of them
    renderer = Renderer()
    for mdir in macro_dirs:
        for sql_path in sorted(mdir.rglob("*.sql")):
            rel = sql_path.relative_to(root).as_posix()
            renderer.add_macros(sql_path.read_text(encoding="utf-8"), rel)

    raw: dict[str, tuple[Path, str]] = {}
    for mdir in model_dirs:
        for sql_path in sorted(mdir.rglob("*.sql")):
            name = sql_path.stem
            rel = sql_path.relative_to(root).as_posix()
            if not _NAME_RE.match(name):
                raise ProjectError(f"{rel}: model name {name!r} must match {_NAME_RE.pattern}")
            if name in raw:
                other = raw[name][0].relative_to(root).as_posix()
                raise ProjectError(f"{rel}: model {name!r} is also defined in {other}")
            raw[name] = (sql_path, rel)

    yaml_models: dict[str, tuple[dict[str, Any], str]] = {}
    sources: dict[str, tuple[str, ...]] = {}
    for mdir in model_dirs:
        for yml in sorted([*mdir.rglob("*.yml"), *mdir.rglob("*.yaml")]):
            rel = yml.relative_to(root).as_posix()
            data = _read_yaml(yml, root)
            for src in data.get("sources") or []:
                tables = tuple(t["name"] if isinstance(t, dict) else t for t in src["tables"])
                sources[src["name"]] = sources.get(src["name"], ()) + tables
            for entry in data.get("models") or []:
                name = entry.get("name")
                if name not in raw:
                    raise ProjectError(f"{rel}: tests for model {name!r}, which has no .sql file")
                yaml_models[name] = (entry, rel)

    models: dict[str, Model] = {}
    for name, (sql_path, rel) in raw.items():
        text = sql_path.read_text(encoding="utf-8")
        rendered = renderer.render(text, rel)
        entry, yrel = yaml_models.get(name, ({}, rel))
        folder = tuple(Path(rel).parent.parts[1:])
        cfg = {**_folder_config(pcfg, folder), **(entry.get("config") or {}), **rendered.config}
        cfg = _check_config(cfg, rel)
        if cfg.get("enabled") is False:
            continue
        tests = list(_generic_tests(entry.get("tests"), name, None, f"{yrel} ({name})"))
        for col in entry.get("columns") or []:
            tests.extend(
                _generic_tests(
                    col.get("tests"), name, col["name"], f"{yrel} ({name}.{col['name']})"
                )
            )
        models[name] = Model(
            name=name,
            path=rel,
            raw_sql=text,
            sql=rendered.sql,
            refs=tuple(rendered.refs),
            sources=tuple(rendered.sources),
            materialized=cfg["materialized"],
            partition_by=cfg["partition_by"],
            order_by=cfg["order_by"],
            description=str(entry.get("description") or "").strip(),
            tests=tests,
        )

    for model in models.values():
        for ref in model.refs:
            if ref not in models:
                raise ProjectError(f"{model.path}: ref({ref!r}): no such model; {_known(models)}")
        for src, table in model.sources:
            if table not in sources.get(src, ()):
                raise ProjectError(
                    f"{model.path}: source({src!r}, {table!r}) is not declared in a sources: "
                    f"block; declared: {sorted(f'{s}.{t}' for s in sources for t in sources[s])}"
                )

    singular: list[DataTest] = []
    for tdir in test_dirs:
        for sql_path in sorted(tdir.rglob("*.sql")):
            rel = sql_path.relative_to(root).as_posix()
            rendered = renderer.render(sql_path.read_text(encoding="utf-8"), rel)
            for ref in rendered.refs:
                if ref not in models:
                    raise ProjectError(f"{rel}: ref({ref!r}): no such model; {_known(models)}")
            singular.append(
                DataTest(
                    name=sql_path.stem,
                    kind="singular",
                    model=rendered.refs[0] if len(rendered.refs) == 1 else None,
                    sql=rendered.sql,
                    refs=tuple(rendered.refs),
                    path=rel,
                )
            )

    project = Project(
        name=str(pcfg.get("name", root.name)),
        root=root,
        models=models,
        sources=sources,
        singular_tests=singular,
        macros=dict(renderer.macros),
    )
    project.order  # noqa: B018 - validates the graph now (CycleError names the cycle)
    return project


def _known(models: dict[str, Model]) -> str:
    return f"models: {sorted(models)}"
