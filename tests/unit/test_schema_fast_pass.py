"""The schemas' fast pass (``schemas.fast_verdict``) never vouches for a part pandera rejects:
for every lake table, a valid row built from the pandera declaration, then one mutation per
rule (a null, each check broken, a wrong dtype, a missing or extra column, a bad partition
value); the fast verdict must equal pandera's own on every one."""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal

import pandera.polars as pandera
import polars as pl
import pyarrow as pa
import pytest

from fluxforge import schemas
from fluxforge.schemas import PARTITION_COLUMNS, SCHEMAS, SchemaViolation

STRINGS = ("x", "2024-01-02", "1m", "BTC-USD")
BAD_STRINGS = ("", "../x", "nope!", "2024-1-2", "0m")
BAD_NUMBERS = (-2, -1, 0, 1 << 61)
PARTITION = ("coinbase", "BTC-USD", "2024-01-02")


def _good(col: pandera.Column) -> object:
    dtype = col.dtype.type
    if dtype == pl.Utf8:
        allowed = [c.statistics["allowed_values"] for c in col.checks if c.name == "isin"]
        if allowed:
            return sorted(allowed[0])[0]
        patterns = [c.statistics["pattern"] for c in col.checks if c.name == "str_matches"]
        return next(s for s in STRINGS if all(re.search(p, s) for p in patterns))
    if dtype == pl.Boolean:
        return True
    if dtype == pl.Binary:
        return b"x"
    if isinstance(dtype, pl.Decimal):
        return Decimal("1")
    if isinstance(dtype, pl.List):
        return [Decimal("1")] if isinstance(dtype.inner, pl.Decimal) else [1]
    return 1  # integers: every check of the schemas accepts 1


def _frame(table: str, values: dict[str, object], dtypes: dict[str, pl.DataType]) -> pa.Table:
    return pl.DataFrame({k: [v] for k, v in values.items()}, schema=dtypes).to_arrow()


def _verdicts(table: str, data: pa.Table, part: tuple[str, str, str]) -> tuple[bool, bool]:
    fast = schemas.fast_verdict(table, [(data, *part)])
    try:
        schemas.validate(table, data, *part)
        slow = True
    except SchemaViolation:
        slow = False
    return fast, slow


def _cases(table: str) -> list[tuple[str, pa.Table | None, tuple[str, str, str]]]:
    schema = SCHEMAS[table]
    columns = {n: c for n, c in schema.columns.items() if n not in PARTITION_COLUMNS}
    dtypes = {n: c.dtype.type for n, c in columns.items()}
    good = {n: _good(c) for n, c in columns.items()}
    cases = [("valid", _frame(table, good, dtypes), PARTITION)]
    for name in columns:
        row = dict(good)
        row[name] = None
        cases.append((f"{name}=null", _frame(table, row, dtypes), PARTITION))
        dtype = dtypes[name]
        bad: tuple[object, ...] = ()
        if dtype == pl.Utf8:
            bad = BAD_STRINGS
        elif dtype.is_integer():
            bad = BAD_NUMBERS if dtype == pl.Int64 else BAD_NUMBERS[:-1]
        elif isinstance(dtype, pl.Decimal):
            bad = (Decimal("-1"), Decimal("0"))
        for value in bad:
            row = dict(good)
            row[name] = value
            cases.append((f"{name}={value!r}", _frame(table, row, dtypes), PARTITION))
        other = {**dtypes, name: pl.Int32 if dtype != pl.Int32 else pl.Int64}
        with contextlib.suppress(TypeError, pl.exceptions.PolarsError):  # not castable
            cases.append((f"{name} as {other[name]}", _frame(table, good, other), PARTITION))
        missing = {k: v for k, v in good.items() if k != name}
        cases.append(
            (f"no {name}", _frame(table, missing, {k: dtypes[k] for k in missing}), PARTITION)
        )
    extra = _frame(table, {**good, "extra": 1}, {**dtypes, "extra": pl.Int64})
    cases.append(("extra column", extra, PARTITION))
    for i, value in enumerate(("../x", "bad date", "")):
        part = list(PARTITION)
        part[i] = value
        cases.append((f"partition {i}={value!r}", cases[0][1], tuple(part)))  # type: ignore[arg-type]
    return cases  # type: ignore[return-value]


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_fast_pass_agrees_with_pandera_on_every_rule(table: str) -> None:
    rejected = 0
    for label, data, part in _cases(table):
        assert data is not None
        fast, slow = _verdicts(table, data, part)
        assert fast == slow, f"{table} {label}: fast pass {fast}, pandera {slow}"
        rejected += not slow
    assert rejected >= len(SCHEMAS[table].columns)  # the mutations really break rules


def test_validate_parts_still_names_the_failing_partition_after_the_fast_pass() -> None:
    table = "trades"
    good = _cases(table)[0][1]
    bad = next(d for label, d, _ in _cases(table) if label == "price=Decimal('-1')")
    with pytest.raises(SchemaViolation, match="exchange=kraken"):
        schemas.validate_parts(
            table, [(good, *PARTITION), (bad, "kraken", "ETH-USD", "2024-01-02")]
        )


def _distinct_columns(table: str) -> list[str]:
    """The string columns the fast pass checks on their distinct values in a big part."""
    return [
        name
        for name, col in SCHEMAS[table].columns.items()
        if name not in PARTITION_COLUMNS
        and col.dtype.type == pl.Utf8
        and col.checks
        and all(c.name in schemas.SET_CHECKS for c in col.checks)
    ]


def _cases_of(table: str, columns: list[str]) -> tuple[pa.Table, list]:
    """The valid row of `table` and the cases that mutate one of `columns` (valid first)."""
    cases = [
        (label, data, part)
        for label, data, part in _cases(table)
        if label == "valid" or any(label.startswith(f"{name}=") for name in columns)
    ]
    good = cases[0][1]
    assert good is not None
    return good, cases


@pytest.mark.parametrize("table", [t for t in sorted(SCHEMAS) if _distinct_columns(t)])
def test_fast_pass_agrees_with_pandera_on_big_parts_with_one_bad_string(table: str) -> None:
    # a part of DISTINCT_MIN_ROWS rows or more has such columns checked on their distinct
    # values: one bad (or null) row among many good ones must still be refused
    rows = schemas.DISTINCT_MIN_ROWS
    columns = _distinct_columns(table)
    good, cases = _cases_of(table, columns)
    rejected = 0
    for label, data, part in cases:
        assert data is not None
        big = pa.concat_tables([good] * (rows // 2) + [data] + [good] * (rows // 2))
        fast, slow = _verdicts(table, big.combine_chunks(), part)
        assert fast == slow, f"{table} {label} in {big.num_rows} rows: fast {fast}, pandera {slow}"
        rejected += not slow
    assert rejected >= len(columns) * 2  # a null and a bad value of each column at least


def _bounded_columns(table: str) -> list[str]:
    """The number columns the fast pass checks on their least and greatest value."""
    return [
        name
        for name, col in SCHEMAS[table].columns.items()
        if name not in PARTITION_COLUMNS
        and (col.dtype.type.is_integer() or isinstance(col.dtype.type, pl.Decimal))
        and col.checks
        and all(c.name in schemas.INTERVAL_CHECKS for c in col.checks)
    ]


@pytest.mark.parametrize("table", [t for t in sorted(SCHEMAS) if _bounded_columns(t)])
def test_fast_pass_agrees_with_pandera_on_big_parts_with_one_bad_number(table: str) -> None:
    # number columns with interval checks are checked on their extremes: one bad (or null)
    # value anywhere among many good rows, in one chunk or split across chunks, is refused
    columns = _bounded_columns(table)
    good, cases = _cases_of(table, columns)
    many = 300
    rejected = 0
    for label, data, part in cases:
        assert data is not None
        slow = _verdicts(table, data, part)[1]  # pandera's verdict on the row alone
        for before in (0, many // 2, many):
            big = pa.concat_tables([good] * before + [data] + [good] * (many - before))
            for rows in (big.combine_chunks(), big):
                fast = schemas.fast_verdict(table, [(rows, *part)])
                assert fast == slow, f"{table} {label} after {before} rows: fast {fast}"
        rejected += not slow
    assert rejected >= len(columns)  # a bad value (or a null) of each column at least
