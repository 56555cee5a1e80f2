"""The one definition of an OHLCV bar, shared by the hot store (PostgreSQL, ``fluxforge.hot``),
the reader (Arrow, ``fluxforge.query``) and the SQL models (DuckDB, ``dbt_like_sql/``).

The rule (docs/data-guide.md, "Bars"):

1. A venue trade id counts once per exchange, symbol and receive date (the lake partition): the
   first receipt in ``FIRST_RECEIPT`` order is kept (a reconnect can repeat a trade); trades
   without an id (null or empty) all count.
2. Bar time = ``ts_event``, or ``ts_recv`` when the venue sent no event time (``ts_event <= 0``);
   the bar of a trade starts at ``bar_time - bar_time % width`` (UTC-aligned, integer ns).
3. Within a bar, trades are ordered by ``TRADE_ORDER``: bar time, receive time, the daemon's
   line ``seq``, then the venue trade id compared as a number when it is one (shorter first,
   then bytewise: "9" < "10"), then price. Open = the first trade's price, close = the last's.
   Trades still tied have the same price, so open and close do not depend on the engine.
4. high = max(price), low = min(price), volume = sum(size) exactly (decimal), trade_count =
   count, vwap = sum(price * size) / volume in float64 (null when volume is 0).

The rule is written here once as data; the SQL of each engine is generated from it
(``sql_*``) and the dbt macros of ``dbt_like_sql/macros/bar_rule.sql`` are this module's output
(``dbt_macros()``; a test requires the file to be up to date).
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

Dialect = Literal["duckdb", "postgres"]

# columns that scope the trade-id de-duplication ("date" is the receive date of the lake
# partition; the hot store calls it "day")
DEDUP_SCOPE = ("exchange", "symbol", "date")
# which receipt of a repeated trade id is kept: the first in this order
FIRST_RECEIPT = ("ts_recv", "seq", "price", "size")
# trade order inside a bar; "trade_id" sorts as a number when it is one (length first)
TRADE_ORDER = ("bar_time", "ts_recv", "seq", "trade_id", "price")

MACROS_PATH = "dbt_like_sql/macros/bar_rule.sql"


def _sql_key(column: str, dialect: Dialect, descending: bool = False) -> list[str]:
    suffix = " desc" if descending else ""
    if column == "bar_time":
        return [f"{sql_bar_time()}{suffix}"]
    if column == "trade_id":
        # bytewise text order in every engine (PostgreSQL's default collation is the locale's)
        collate = ' collate "C"' if dialect == "postgres" else ""
        return [
            f"length(coalesce(trade_id, '')){suffix}",
            f"coalesce(trade_id, ''){collate}{suffix}",
        ]
    return [f"{column}{suffix}"]


def sql_bar_time() -> str:
    """Bar time of a trade row: ``ts_event``, else ``ts_recv``."""
    return "case when ts_event > 0 then ts_event else ts_recv end"


def sql_order(
    columns: tuple[str, ...], dialect: Dialect = "duckdb", descending: bool = False
) -> str:
    """An ``order by`` list (without the keywords) for one of the rule's orders."""
    return ", ".join(k for c in columns for k in _sql_key(c, dialect, descending))


def sql_is_first_receipt(dialect: Dialect = "duckdb", date_column: str = "date") -> str:
    """A boolean expression (window function) true for the rows the de-duplication keeps."""
    scope = ", ".join(date_column if c == "date" else c for c in DEDUP_SCOPE)
    return (
        "(trade_id is null or trade_id = '' or row_number() over ("
        f"partition by {scope}, trade_id order by {sql_order(FIRST_RECEIPT, dialect)}) = 1)"
    )


def dbt_macros() -> str:
    """The text of ``dbt_like_sql/macros/bar_rule.sql``."""
    return (
        "{#- Generated from fluxforge/bar_rule.py (the one definition of a bar, see\n"
        '    docs/data-guide.md "Bars"): edit the module, then write this file with\n'
        "    `uv run python -m fluxforge.bar_rule`. -#}\n"
        "\n"
        "{% macro bar_time() -%}\n"
        f"{sql_bar_time()}\n"
        "{%- endmacro %}\n"
        "\n"
        "{% macro trade_order() -%}\n"
        f"{sql_order(TRADE_ORDER)}\n"
        "{%- endmacro %}\n"
        "\n"
        "{% macro is_first_receipt() -%}\n"
        f"{sql_is_first_receipt()}\n"
        "{%- endmacro %}\n"
    )


# -- Arrow (the reader) ---------------------------------------------------------------------


def bar_time(trades: pa.Table) -> pa.ChunkedArray:
    """Bar time of trade rows: ``ts_event``, or ``ts_recv`` where the venue sent none (<= 0)."""
    return pc.if_else(pc.greater(trades["ts_event"], 0), trades["ts_event"], trades["ts_recv"])


def _sort_columns(trades: pa.Table, columns: tuple[str, ...]) -> tuple[pa.Table, list]:
    cols: dict[str, pa.ChunkedArray | pa.Array] = {}
    keys = []
    for c in columns:
        if c == "bar_time":
            cols[c] = bar_time(trades)
        elif c == "trade_id":
            ids = pc.fill_null(trades["trade_id"], "")
            cols["trade_id_len"] = pc.utf8_length(ids)
            keys.append(("trade_id_len", "ascending"))
            # binary view of the text: Arrow then sorts bytewise, as DuckDB and "C" do
            cols[c] = pc.cast(ids, pa.binary())
        else:
            cols[c] = trades[c]
        keys.append((c, "ascending"))
    return pa.table(cols), keys


def sort_indices(trades: pa.Table, columns: tuple[str, ...]) -> pa.Array:
    """Row order of `trades` by one of the rule's orders (``TRADE_ORDER``, ``FIRST_RECEIPT``)."""
    table, keys = _sort_columns(trades, columns)
    return pc.sort_indices(table, keys)


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parent.parent / MACROS_PATH
    target.write_text(dbt_macros())
    print(f"wrote {target}")
