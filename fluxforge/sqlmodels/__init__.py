"""The dbt-like SQL runner: ``dbt_like_sql/`` models on DuckDB over the Parquet lake.

Models, singular tests and macros are Jinja templates (render.py); project.py loads and orders
them, runner.py builds and tests them.

Public API (one call per Dagster asset / asset check)::

    project = load_project()                 # models with .deps (the ref() graph), .tests
    result = run(cfg, select=["bars_1m"])    # RunResult: per model rows, files, bytes, uri
    checks = test(cfg, select=["bars_1m"])   # TestResult: per test status and failing rows
"""

from fluxforge.sqlmodels.project import (
    DEFAULT_PROJECT_DIR,
    CycleError,
    DataTest,
    Model,
    Project,
    ProjectError,
    load_project,
)
from fluxforge.sqlmodels.runner import (
    ModelNotBuiltError,
    ModelRun,
    RunResult,
    TestResult,
    TestRun,
    connect,
    failing_rows_sql,
    run,
    test,
)

__all__ = [
    "DEFAULT_PROJECT_DIR",
    "CycleError",
    "DataTest",
    "Model",
    "ModelNotBuiltError",
    "ModelRun",
    "Project",
    "ProjectError",
    "RunResult",
    "TestResult",
    "TestRun",
    "connect",
    "failing_rows_sql",
    "load_project",
    "run",
    "test",
]
