"""Run the SQL project on DuckDB over the Parquet lake (local or S3) and run its tests.

Materialization (documented in README / project.yml):

- ``view`` models (staging) are DuckDB views inside the run's connection: never copied;
- ``table`` models (marts) are computed once and written as zstd Parquet through the ETL output
  Storage at ``{processed_dir}/models/{model}/exchange=E/symbol=S/date=D/data.parquet`` (the
  ``partition_by`` columns are hive directories and, like in the lake tables, not stored in the
  files; an empty result is one schema-only ``data.parquet`` at the model root). Each partition
  file is replaced atomically, then files of partitions that disappeared are deleted, so a crash
  mid-run leaves the previous or the new file of every partition, never a torn one.

Sources (``source('lake', 'trades')``) are views over the lake files listed through Storage and
read with ``read_parquet(files, hive_partitioning=true)``; the file list and every test value are
bound parameters, identifiers are quoted. On S3, DuckDB reads through an fsspec ``s3fs``
filesystem registered on the connection (DuckDB 2.0 cannot install httpfs offline).
"""

from __future__ import annotations

import io
import logging
import posixpath
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from fluxforge.config import Config
from fluxforge.lake import Lake
from fluxforge.sqlmodels.project import (
    PARTITION_COLUMNS,
    DataTest,
    Model,
    Project,
    load_project,
)
from fluxforge.sqlmodels.render import quote_ident, source_relation
from fluxforge.storage import Layout, Storage, open_storage
from fluxforge.tables import SCHEMAS

log = logging.getLogger(__name__)

HIVE_TYPES = {"exchange": "VARCHAR", "symbol": "VARCHAR", "date": "DATE"}
_HIVE_ARROW = {"exchange": pa.string(), "symbol": pa.string(), "date": pa.date32()}


class ModelNotBuiltError(RuntimeError):
    """A model read by the selection has no materialized output yet."""


@dataclass
class ModelRun:
    name: str
    status: str  # success | view | error | skipped
    materialized: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    partitions: int = 0
    uri: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class RunResult:
    models: list[ModelRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.status in ("success", "view") for m in self.models)

    def model(self, name: str) -> ModelRun:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model {name!r} was not part of this run")

    def raise_for_errors(self) -> None:
        failed = [f"{m.name}: {m.error or m.status}" for m in self.models if m.status == "error"]
        if failed or not self.ok:
            raise RuntimeError("SQL models failed: " + "; ".join(failed or ["skipped models"]))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "models": [asdict(m) for m in self.models]}


@dataclass
class TestRun:
    name: str
    kind: str
    model: str | None
    column: str | None
    status: str  # pass | fail | warn | error
    failures: int = 0
    severity: str = "error"
    error: str = ""
    path: str = ""


@dataclass
class TestResult:
    tests: list[TestRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.status in ("pass", "warn") for t in self.tests)

    def test(self, name: str) -> TestRun:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(f"test {name!r} was not part of this run")

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for t in self.tests:
            counts[t.status] = counts.get(t.status, 0) + 1
        return {"ok": self.ok, "counts": counts, "tests": [asdict(t) for t in self.tests]}


# --------------------------------------------------------------------------------------------
# connection


def connect(cfg: Config, storage: Storage | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection able to read the ETL output storage (local or S3).

    Remote storage is read through its fsspec filesystem (``Storage.fsspec_filesystem``):
    DuckDB 2.0 cannot install httpfs offline."""
    storage = storage or open_storage(cfg.storage.etl_output)
    conn = duckdb.connect()
    if storage.local_path("") is None:
        conn.register_filesystem(storage.fsspec_filesystem())
    return conn


class _Context:
    """One run's connection, storage and the relations registered on it.

    With ``dates`` (a dated run: Dagster daily partitions, backfills), sources and model outputs
    are read for those dates and the day before and after (bars bucket event time while the
    lake is partitioned by receive date, so a bar of day D can hold trades filed under D+1), and
    only the ``date=D`` partitions of the built models are replaced."""

    def __init__(self, cfg: Config, project: Project, dates: list[str] | None = None) -> None:
        self.cfg = cfg
        self.project = project
        self.storage: Storage = open_storage(cfg.storage.etl_output)
        self.layout = Layout.of(cfg.storage.etl_output)
        self.conn = connect(cfg, self.storage)
        self.dates = set(dates) if dates is not None else None
        self.read_dates = _with_neighbours(self.dates) if self.dates is not None else None
        self.schemas: dict[str, pa.Schema] = {}

    def close(self) -> None:
        self.conn.close()

    def define_sources(self) -> None:
        for src, tables in self.project.sources.items():
            for table in tables:
                schema = SCHEMAS.get(table)
                if schema is not None:
                    hive = [pa.field(c, _HIVE_ARROW[c]) for c in PARTITION_COLUMNS]
                    schema = pa.schema([*schema, *hive])
                self._define_parquet(
                    source_relation(src, table),
                    self.layout.lake_table(table),
                    PARTITION_COLUMNS,
                    schema,
                )

    def _keys(self, prefix: str, hive: tuple[str, ...]) -> list[str]:
        table = prefix.rsplit("/", 1)[-1]
        if table in SCHEMAS and prefix == self.layout.lake_table(table):
            # lake tables: the committed files, from the table's log
            files = Lake(self.storage, self.layout).files(table)
            if self.read_dates is not None:
                files = [f for f in files if f.date in self.read_dates]
            return [f.key for f in files]
        keys = self.storage.list(prefix, "*.parquet", True)
        if self.read_dates is not None and "date" in hive:
            keys = [k for k in keys if _key_date(k) in self.read_dates]
        return keys

    def _define_parquet(
        self, relation: str, prefix: str, hive: tuple[str, ...], empty: pa.Schema | None
    ) -> None:
        """A view over the Parquet files under `prefix`; `empty` (all columns) when none."""
        keys = self._keys(prefix, hive)
        files = [self.storage.uri(k) for k in keys]
        if keys and all(posixpath.dirname(k) == prefix for k in keys):
            hive = ()  # an empty model's single schema-only file carries every column itself
        if files:
            hive_types = {k: v for k, v in HIVE_TYPES.items() if k in hive}
            params: dict[str, Any] = {"files": files, "hive": bool(hive)}
            options = ""
            if hive_types:
                params["types"] = hive_types
                options = ", hive_types = $types"
            self.conn.sql(
                "select * from read_parquet($files, hive_partitioning = $hive, "
                f"union_by_name = true{options})",
                params=params,
            ).create_view(relation, replace=True)
        elif empty is not None:
            # no files (yet): the relation still has its columns, so users get zero rows
            self.conn.register(relation, pa.Table.from_pylist([], schema=empty))
        else:
            raise ModelNotBuiltError(
                f"model {relation!r} has no output under {self.storage.uri(prefix)}: "
                f"build it first (fluxforge sql run --select {relation})"
            )

    def define_view_model(self, model: Model) -> None:
        self.conn.execute(f"create or replace temp view {quote_ident(model.name)} as {model.sql}")

    def define_built_model(self, model: Model) -> None:
        """Register a table model from its Parquet output (built earlier or in this run)."""
        empty = self.schemas.get(model.name)
        if empty is None and self.dates is not None:
            # a dated run may find no files for its dates: read the columns from any file
            keys = self.storage.list(self.layout.model_dir(model.name), "*.parquet", True)
            if keys:
                empty = self._file_schema(keys[0], model.partition_by)
        self._define_parquet(
            model.name, self.layout.model_dir(model.name), model.partition_by, empty
        )

    def _file_schema(self, key: str, hive: tuple[str, ...]) -> pa.Schema:
        schema = pq.read_schema(io.BytesIO(self.storage.read_bytes(key)))
        extra = [pa.field(c, _HIVE_ARROW[c]) for c in hive if c not in schema.names]
        return pa.schema([*schema, *extra])

    def define(self, model: Model) -> None:
        if model.materialized == "view":
            self.define_view_model(model)
        else:
            self.define_built_model(model)

    # ---------------------------------------------------------------------------------------

    def build(self, model: Model) -> ModelRun:
        started = time.perf_counter()
        out = ModelRun(model.name, "view", model.materialized)
        if model.materialized == "view":
            self.define_view_model(model)
            # binds (validates) the view without scanning the lake; views have no row count
            self.conn.execute(f"describe {quote_ident(model.name)}").fetchall()
        else:
            out = self._materialize(model, out)
        out.seconds = time.perf_counter() - started
        return out

    def _materialize(self, model: Model, out: ModelRun) -> ModelRun:
        keys = list(model.partition_by)
        if self.dates is not None and "date" not in keys:
            raise ValueError(
                f"{model.path}: a dated run can only rebuild models partitioned by date; "
                "run this model without dates"
            )
        tmp = quote_ident(f"__build__{model.name}")
        self.conn.execute(f"create or replace temp table {tmp} as {model.sql}")
        columns = [r[0] for r in self.conn.execute(f"describe {tmp}").fetchall()]
        missing = [c for c in [*keys, *model.order_by] if c not in columns]
        if missing:
            raise ValueError(
                f"{model.path}: partition_by/order_by columns {missing} are not in the model's "
                f"output columns {columns}"
            )
        where, params = "", {}
        if self.dates is not None:
            where, params = (
                " where cast(date as varchar) in (select unnest($dates))",
                {"dates": sorted(self.dates)},
            )
        groups = []
        if keys:
            key_sql = ", ".join(quote_ident(k) for k in keys)
            nulls = self.conn.execute(
                f"select count(*) from {tmp} where "
                + " or ".join(f"{quote_ident(k)} is null" for k in keys)
            ).fetchone()[0]
            if nulls:
                raise ValueError(
                    f"{model.path}: {nulls} rows have a null partition column among {keys}"
                )
            groups = self.conn.execute(
                f"select {key_sql}, count(*) from {tmp}{where} group by all order by all", params
            ).fetchall()
        order = ", ".join(quote_ident(c) for c in [*keys, *model.order_by])
        table = self.conn.sql(
            f"select * from {tmp}{where}" + (f" order by {order}" if order else ""),
            params=params or None,
        ).to_arrow_table()
        self.conn.execute(f"drop table {tmp}")
        self.schemas[model.name] = table.schema
        out.rows = table.num_rows

        prefix = self.layout.model_dir(model.name)
        written: set[str] = set()
        if groups:
            payload = table.drop_columns(keys)
            offset = 0
            for *values, count in groups:
                part = {k: _part_value(v) for k, v in zip(keys, values, strict=True)}
                key = self.layout.model_part(model.name, part)
                written.add(self._write(key, payload.slice(offset, count), out))
                offset += count
        elif self.dates is None:
            written.add(self._write(self.layout.model_part(model.name, {}), table, out))
        out.partitions = len(groups)
        for stale in self.storage.list(prefix, "*.parquet", recursive=True):
            in_scope = (
                self.dates is None
                or _key_date(stale) in self.dates
                or posixpath.dirname(stale) == prefix
            )
            if stale not in written and in_scope:
                self.storage.delete(stale)
        self.define_built_model(model)
        out.status = "success"
        out.uri = self.storage.uri(prefix)
        return out

    def _write(self, key: str, table: pa.Table, out: ModelRun) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.storage.write_bytes(key, data)
        out.files += 1
        out.bytes += len(data)
        return key

    # ---------------------------------------------------------------------------------------

    def run_test(self, test: DataTest) -> TestRun:
        out = TestRun(
            test.name,
            test.kind,
            test.model,
            test.column,
            "pass",
            severity=test.severity,
            path=test.path,
        )
        try:
            sql, params = failing_rows_sql(test)
            out.failures = int(
                self.conn.execute(f"select count(*) from ({sql})", params).fetchone()[0]
            )
        except duckdb.Error as exc:
            out.status, out.error = "error", f"{test.path}: {exc}"
            return out
        if out.failures:
            out.status = "warn" if test.severity == "warn" else "fail"
        return out


def _key_date(key: str) -> str | None:
    for part in key.split("/"):
        if part.startswith("date="):
            return part[5:]
    return None


def _check_dates(dates: Iterable[str] | str | None) -> list[str] | None:
    if dates is None:
        return None
    out = [dates] if isinstance(dates, str) else list(dates)
    for d in out:
        try:
            date.fromisoformat(d)
        except (TypeError, ValueError):
            raise ValueError(f"dates: {d!r} is not a YYYY-MM-DD date") from None
    return out


def _with_neighbours(dates: set[str]) -> set[str]:
    out = set()
    for d in dates:
        day = date.fromisoformat(d)
        out |= {(day + timedelta(days=k)).isoformat() for k in (-1, 0, 1)}
    return out


def _part_value(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def failing_rows_sql(test: DataTest) -> tuple[str, dict[str, Any]]:
    """SQL returning the rows that fail `test`, and its bound parameters."""
    if test.kind == "singular":
        assert test.sql is not None
        return test.sql, {}
    assert test.model is not None
    rel = quote_ident(test.model)
    col = quote_ident(test.column) if test.column else ""
    if test.kind == "not_null":
        return f"select * from {rel} where {col} is null", {}
    if test.kind == "unique":
        return (
            f"select {col}, count(*) as n from {rel} where {col} is not null "
            f"group by {col} having count(*) > 1",
            {},
        )
    if test.kind == "accepted_values":
        return (
            f"select * from {rel} where {col} is not null and not list_contains($values, {col})",
            {"values": list(test.args["values"])},
        )
    if test.kind == "accepted_range":
        inclusive = bool(test.args.get("inclusive", True))
        lo, hi = (">=", "<=") if inclusive else (">", "<")
        conds, params = [], {}
        if test.args.get("min") is not None:
            conds.append(f"not ({col} {lo} $min)")
            params["min"] = test.args["min"]
        if test.args.get("max") is not None:
            conds.append(f"not ({col} {hi} $max)")
            params["max"] = test.args["max"]
        return f"select * from {rel} where {col} is not null and ({' or '.join(conds)})", params
    if test.kind == "unique_combination_of_columns":
        cols = ", ".join(quote_ident(c) for c in test.args["combination_of_columns"])
        return (
            f"select {cols}, count(*) as n from {rel} group by {cols} having count(*) > 1",
            {},
        )
    raise ValueError(f"{test.path}: unknown test kind {test.kind!r}")


# --------------------------------------------------------------------------------------------
# public API


def _project(project: Project | str | Path | None) -> Project:
    return project if isinstance(project, Project) else load_project(project)


def run(
    cfg: Config,
    select: list[str] | tuple[str, ...] | str | None = None,
    project: Project | str | Path | None = None,
    dates: Iterable[str] | str | None = None,
) -> RunResult:
    """Build the selected models (all by default) in dependency order.

    Models upstream of the selection but not in it are read from their existing output (views
    are re-defined from their SQL). A failed model marks its downstream models ``skipped``;
    independent models still run. Check ``RunResult.ok`` or call ``raise_for_errors()``.

    ``dates`` (``YYYY-MM-DD``; a Dagster daily partition or a backfill range) rebuilds only
    those ``date=`` partitions of date-partitioned models; without it every model is rebuilt
    in full and partitions that no longer have rows are removed.
    """
    day_list = _check_dates(dates)
    proj = _project(project)
    names = proj.select([select] if isinstance(select, str) else select)
    needed = set(names)
    for name in names:
        needed |= proj.upstream(name)
    result = RunResult()
    ctx = _Context(cfg, proj, day_list)
    failed: set[str] = set()
    try:
        ctx.define_sources()
        for name in proj.order:
            if name not in needed:
                continue
            model = proj.models[name]
            if name not in names:
                ctx.define(model)  # ModelNotBuiltError names the upstream model to build
                continue
            bad = [r for r in model.refs if r in failed]
            if bad:
                failed.add(name)
                result.models.append(
                    ModelRun(name, "skipped", model.materialized, error=f"upstream failed: {bad}")
                )
                continue
            try:
                run_ = ctx.build(model)
            except (duckdb.Error, ValueError, OSError) as exc:
                failed.add(name)
                run_ = ModelRun(name, "error", model.materialized, error=f"{model.path}: {exc}")
                log.error("model %s failed: %s", name, run_.error)
            else:
                log.info(
                    "model %s: %s, %d rows, %d files, %d bytes",
                    name,
                    run_.status,
                    run_.rows,
                    run_.files,
                    run_.bytes,
                )
            result.models.append(run_)
    finally:
        ctx.close()
    return result


def test(
    cfg: Config,
    select: list[str] | tuple[str, ...] | str | None = None,
    project: Project | str | Path | None = None,
) -> TestResult:
    """Run the tests of the selected models (all tests by default) against their outputs.

    A model's tests are its YAML tests plus the singular tests it owns (see
    ``Project.tests_for``). A test that cannot run (missing column, model never built) is
    reported with status ``error`` and the reason, not raised.
    """
    proj = _project(project)
    names = proj.select([select] if isinstance(select, str) else select)
    tests = [t for name in names for t in proj.tests_for(name)]
    if not select:
        tests += [t for t in proj.singular_tests if not t.refs]
    result = TestResult()
    ctx = _Context(cfg, proj)
    try:
        ctx.define_sources()
        broken: dict[str, str] = {}
        for name in proj.order:
            try:
                ctx.define(proj.models[name])
            except (ModelNotBuiltError, duckdb.Error) as exc:
                broken[name] = str(exc)
        for t in tests:
            missing = [r for r in t.refs if r in broken]
            if missing:
                result.tests.append(
                    TestRun(
                        t.name,
                        t.kind,
                        t.model,
                        t.column,
                        "error",
                        severity=t.severity,
                        error=broken[missing[0]],
                        path=t.path,
                    )
                )
                continue
            run_ = ctx.run_test(t)
            if run_.status != "pass":
                log.warning(
                    "test %s: %s (%d failing rows) %s",
                    t.name,
                    run_.status,
                    run_.failures,
                    run_.error,
                )
            result.tests.append(run_)
    finally:
        ctx.close()
    return result


# pytest collects callables named test*/Test*; these are library API, not tests
test.__test__ = False  # type: ignore[attr-defined]
TestRun.__test__ = False  # type: ignore[attr-defined]
TestResult.__test__ = False  # type: ignore[attr-defined]
