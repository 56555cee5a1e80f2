"""How answers look to a person: timestamps, decimals, sizes, durations, tables and books.

Lake timestamps are int64 ns since the epoch (UTC) and prices exact decimal128(38, 12)
(docs/table-schemas.md). People read them as ISO-8601 UTC (``2022-05-13T16:27:04.123456789Z``)
and as plain decimals (``64999.98``, not ``64999.980000000000``). Every command formats
through this module, so the same value reads the same everywhere.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

FORMATS = ("table", "csv", "json", "parquet")
# rows a terminal table shows; csv/json/parquet always carry every row
TABLE_MAX_ROWS = 200


class RenderError(ValueError):
    """An output request cannot be honoured (e.g. binary to a terminal); the message says how."""


# ------------------------------------------------------------------------------ scalars


def iso(ns: int | None) -> str:
    """``1652459224123456789`` -> ``2022-05-13T16:27:04.123456789Z`` (whole seconds: no
    fraction); None -> ``-``."""
    if ns is None:
        return "-"
    secs, frac = divmod(int(ns), 1_000_000_000)
    text = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}Z" if frac else f"{text}Z"


def plain(value: Decimal | float | int | None) -> str:
    """A number without scale padding: ``Decimal('64999.980000000000000000')`` -> ``64999.98``."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
    else:
        return str(value)
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def human_bytes(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KiB``; None -> ``-``."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{int(n)} B"
    exp = min(int(math.log(abs(n), 1024)), 4)
    return f"{n / 1024**exp:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exp]}"


def human_duration(seconds: float | None) -> str:
    """``93784.5`` -> ``1d 2h 3m``; ``4.25`` -> ``4.2s``; None -> ``-``."""
    if seconds is None:
        return "-"
    s = float(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 60:
        return f"{sign}{s:.1f}s" if s < 10 else f"{sign}{s:.0f}s"
    minutes, sec = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (sec, "s")]
    shown = [f"{v}{u}" for v, u in parts if v][:3] or ["0s"]
    return sign + " ".join(shown)


# ------------------------------------------------------------------------------ tables


def is_time_column(field: pa.Field) -> bool:
    """int64 ns columns: ``ts`` and ``ts_*`` (docs/table-schemas.md)."""
    return pa.types.is_integer(field.type) and (field.name == "ts" or field.name.startswith("ts_"))


def _trim_decimals(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Exact decimal strings without scale padding: "64999.980000" -> "64999.98", "100.000"
    -> "100". Polars prints decimals positionally (Arrow's own cast switches to exponents,
    "6.2E-7", for small values)."""
    import polars as pl

    series = pl.from_arrow(arr)
    assert isinstance(series, pl.Series)
    text = series.cast(pl.String).to_arrow()
    return pc.replace_substring_regex(text, r"\.?0+$", "")


_FRACTIONS = ((1_000_000_000, 0), (1_000_000, 3), (1_000, 6))


def _iso_column(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO strings with as many fraction digits as the column needs (0, 3, 6 or 9: the same
    for every row, so the column stays aligned)."""
    text = pc.strftime(pc.cast(arr, pa.timestamp("ns", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    for unit, digits in _FRACTIONS:
        # integer division truncates: a value is a multiple of `unit` when it survives it
        whole = pc.multiply(pc.divide(arr, unit), unit)
        if pc.all(pc.equal(arr, whole)).as_py() is not False:
            keep = r"\1Z" if digits else "Z"
            pattern = rf"(\.\d{{{digits}}})\d*Z$" if digits else r"\.\d*Z$"
            return pc.replace_substring_regex(text, pattern, keep)
    return text


def display_table(table: pa.Table, ns: bool = False) -> pa.Table:
    """`table` with time columns as ISO strings (kept as int ns with `ns`) and decimals as
    trimmed strings (exact: no float on the way)."""
    cols = []
    for field, col in zip(table.schema, table.columns, strict=True):
        if is_time_column(field) and not ns:
            col = _iso_column(col)
        elif pa.types.is_decimal(field.type):
            col = _trim_decimals(col)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def _sink(output: str | None, binary: bool) -> IO[Any]:
    if output in (None, "-"):
        return sys.stdout.buffer if binary else sys.stdout
    return open(output, "wb" if binary else "w", encoding=None if binary else "utf-8")


def write_table(
    table: pa.Table,
    fmt: str,
    output: str | None = None,
    *,
    ns: bool = False,
    title: str | None = None,
) -> None:
    """Write a result as a rich table, CSV, JSON lines or Parquet to `output` (a path, or
    stdout for None / ``-``). Parquet goes to a file, or to stdout only when it is not a
    terminal (``--output -`` into a pipe)."""
    if fmt not in FORMATS:
        raise RenderError(f"format={fmt!r}: allowed {', '.join(FORMATS)}")
    if fmt == "parquet":
        if output is None or (output == "-" and sys.stdout.isatty()):
            raise RenderError(
                "--format parquet writes binary: give --output FILE.parquet "
                "(or --output - with stdout redirected to a file or pipe)"
            )
        import pyarrow.parquet as pq

        if output == "-":
            pq.write_table(table, sys.stdout.buffer, compression="zstd")
        else:
            pq.write_table(table, output, compression="zstd")
        return
    shown = display_table(table, ns=ns)
    sink = _sink(output, binary=False)
    try:
        if fmt == "table":
            right = numeric_columns(table.schema, ns)
            sink.write(render_rich(shown, title, sink is sys.stdout, right=right))
        else:
            import polars as pl

            df = pl.from_arrow(shown)
            assert isinstance(df, pl.DataFrame)
            sink.write(df.write_csv() if fmt == "csv" else df.write_ndjson())
        sink.flush()
    finally:
        if sink is not sys.stdout:
            sink.close()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | Decimal):
        return plain(value)
    return str(value)


def numeric_columns(schema: pa.Schema, ns: bool = False) -> list[bool]:
    """Which columns to right-align: numbers (decimals included), times only as ns."""
    return [
        (pa.types.is_integer(f.type) and (ns or not is_time_column(f)))
        or pa.types.is_floating(f.type)
        or pa.types.is_decimal(f.type)
        for f in schema
    ]


def render_rich(
    table: pa.Table,
    title: str | None = None,
    terminal: bool = True,
    max_rows: int = TABLE_MAX_ROWS,
    right: Sequence[bool] | None = None,
) -> str:
    """An aligned text table of a display table (`display_table`); `right`: columns to
    right-align. At most `max_rows` rows; a caption says how many more there are."""
    rows = table.slice(0, max_rows).to_pylist()
    caption = None
    if table.num_rows > max_rows:
        caption = f"first {max_rows} of {table.num_rows} rows; --format csv|json|parquet for all"
    elif table.num_rows == 0:
        caption = "no rows"
    return render_rows(
        table.column_names,
        [[_cell(r[c]) for c in table.column_names] for r in rows],
        right=right,
        title=title,
        caption=caption,
        terminal=terminal,
    )


def render_rows(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Sequence[bool] | None = None,
    title: str | None = None,
    caption: str | None = None,
    terminal: bool = True,
) -> str:
    """Rows of strings as an aligned rich table (no colour codes unless to a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows = [list(r) for r in rows]
    # the title is its own line above the table: a long one never wraps inside the columns
    tbl = Table(caption=caption, box=box.SIMPLE_HEAD)
    for i, name in enumerate(header):
        justify = "right" if right and right[i] else "left"
        tbl.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        tbl.add_row(*row)
    # wide enough for every cell off a terminal, so files and pipes never wrap a row
    need = sum(max([len(h)] + [len(r[i]) for r in rows]) + 3 for i, h in enumerate(header))
    need = max(need, len(title or ""), len(caption or ""), 20) + 4
    buf = io.StringIO()
    width = None if terminal and sys.stdout.isatty() else need
    console = Console(
        file=buf,
        width=width,
        force_terminal=terminal and sys.stdout.isatty(),
        color_system="auto" if terminal and sys.stdout.isatty() else None,
        highlight=False,
    )
    if title:
        console.print(title, soft_wrap=True)
    console.print(tbl)
    return buf.getvalue()


# ------------------------------------------------------------------------------ books

_BOOK_TIMES = ("ts", "snapshot_ts", "last_update_ts")


def book_document(
    book: dict[str, Any], max_age_s: float = math.inf, ns: bool = False
) -> dict[str, Any]:
    """A book (``BookAt.to_dict``) for people and programs: ``age_s`` = seconds between the
    last message reflected in the book and the instant asked, ``stale`` = older than
    `max_age_s` (the data may end before that instant); times ISO unless `ns`."""
    doc = dict(book)
    last = doc.get("last_update_ts")
    doc["age_s"] = None if last is None else round((doc["ts"] - last) / 1e9, 9)
    doc["stale"] = bool(doc["age_s"] is not None and doc["age_s"] > max_age_s)
    if not ns:
        for key in _BOOK_TIMES:
            doc[key] = None if doc.get(key) is None else iso(doc[key])
        if doc.get("gap"):
            gap = dict(doc["gap"])
            for key in ("ts_from", "ts_to"):
                if gap.get(key) is not None:
                    gap[key] = iso(gap[key])
            doc["gap"] = gap
    return doc


def render_book(doc: dict[str, Any], terminal: bool = True) -> str:
    """A book document (`book_document`, ISO times) as a titled table, best levels first."""
    state = "valid" if doc["valid"] else "NOT VALID (gap)"
    state += ", STALE" if doc.get("stale") else ""
    title = (
        f"{doc['exchange']} {doc['symbol']} at {doc['ts']}: {state}; snapshot "
        f"{doc['snapshot_ts'] or '-'}, epoch {doc['book_epoch']}, {doc['deltas_applied']} deltas, "
        f"last update {human_duration(doc['age_s'])} before"
    )
    bids, asks = doc["bids"], doc["asks"]
    rows = []
    for i in range(max(len(bids), len(asks))):
        bp, bs = bids[i] if i < len(bids) else ("", "")
        ap, az = asks[i] if i < len(asks) else ("", "")
        rows.append([str(i + 1), bs, bp, ap, az])
    return render_rows(
        ["#", "bid size", "bid", "ask", "ask size"],
        rows,
        right=[True, True, True, False, False],
        title=title,
        caption=None if rows else "no levels",
        terminal=terminal,
    )


# ------------------------------------------------------------------------------ catalog


def render_catalog(entries: Sequence[Any]) -> str:
    """Catalog entries (``fluxforge.catalog.Entry``) as one table."""
    rows = [
        [
            e.table,
            e.exchange,
            e.symbol,
            e.first_date,
            e.last_date,
            str(e.days),
            f"{e.rows:,}",
            human_bytes(e.bytes),
        ]
        for e in entries
    ]
    return render_rows(
        ["table", "exchange", "symbol", "first date", "last date", "days", "rows", "size"],
        rows,
        right=[False, False, False, False, False, True, True, True],
        title="lake catalog (UTC dates)",
        caption=None if rows else "empty",
        terminal=True,
    )
