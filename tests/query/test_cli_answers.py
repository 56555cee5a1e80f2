"""What a user sees from `fluxforge query` and `fluxforge catalog` on a lake built from the
OKX capture: readable tables, ISO times, exact decimals, files written, hints on empty answers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from fluxforge.cli import main

DAY = ("--start", "2022-05-13", "--end", "2022-05-14")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def trades(lake: Path, *extra: str) -> Result:
    return run("query", "trades", "--config", str(lake), "--exchange", "okx", *extra)


def test_query_trades_table_has_iso_times_trimmed_decimals_one_line_per_row(lake: Path) -> None:
    res = trades(lake, "--symbol", "BTC-USDT", *DAY)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].strip() == "okx BTC-USDT trades"
    header = next(line for line in lines if "ts_event" in line)
    assert header.split() == [
        "ts_event", "ts_recv", "venue_symbol", "trade_id", "price", "size", "side", "seq",
    ]  # fmt: skip
    first = lines[lines.index(header) + 2].split()
    # the capture's first trade: 30236 x 0.0002, event time in ms, receive time in ns
    assert first[0] == "2022-05-13T16:27:04.818Z" and first[1].startswith("2022-05-13T16:27:05.")
    assert first[4:7] == ["30236", "0.0002", "buy"]
    assert "0.00000062" in res.stdout and "E-7" not in res.stdout  # no exponent, no padding
    rows = [line for line in lines if line.strip().startswith("2022-05-13T")]
    assert len(rows) == 69  # one line per trade: nothing wraps
    assert len({len(line.rstrip()) for line in rows}) == 1  # aligned columns


def test_query_accepts_slash_and_lowercase_symbols(lake: Path) -> None:
    dash = trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", "csv")
    slash = trades(lake, "--symbol", "btc/usdt", *DAY, "--format", "csv")
    assert dash.exit_code == slash.exit_code == 0
    assert dash.stdout == slash.stdout and dash.stdout.count("\n") == 70


def test_query_csv_json_iso_by_default_ns_on_request(lake: Path) -> None:
    rows = list(
        csv.DictReader(
            io.StringIO(trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", "csv").stdout)
        )
    )
    assert rows[0]["ts_event"] == "2022-05-13T16:27:04.818Z" and rows[0]["price"] == "30236"
    ns = trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", "json", "--ns")
    first = json.loads(ns.stdout.splitlines()[0])
    assert first["ts_event"] == 1652459224818000000 and first["size"] == "0.0002"


@pytest.mark.parametrize("fmt", ["csv", "json", "table", "parquet"])
def test_query_output_file_is_honoured_for_every_format(
    lake: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"trades.{fmt}"
    res = trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", fmt, "--output", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and out.stat().st_size > 0
    if fmt == "parquet":
        assert pq.read_table(out).num_rows == 69
    elif fmt == "json":
        assert len(out.read_text().splitlines()) == 69
    elif fmt == "csv":
        assert len(out.read_text().splitlines()) == 70


def test_query_parquet_without_output_is_refused_with_a_hint(lake: Path) -> None:
    res = trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", "parquet")
    assert res.exit_code == 2 and res.stdout == ""
    assert "--output" in res.stderr


def test_query_end_is_exclusive(lake: Path) -> None:
    got = list(
        csv.DictReader(
            io.StringIO(
                trades(lake, "--symbol", "BTC-USDT", *DAY, "--format", "csv", "--ns").stdout
            )
        )
    )
    t0 = got[0]["ts_recv"]
    res = trades(lake, "--symbol", "BTC-USDT", "--start", t0, "--end", t0, "--format", "csv")
    assert res.exit_code == 2 and "must be after" in res.stderr
    one = trades(
        lake,
        "--symbol",
        "BTC-USDT",
        "--start",
        t0,
        "--end",
        str(int(t0) + 1),
        "--format",
        "csv",
        "--ns",
    )
    assert one.exit_code == 0 and one.stdout.count("\n") == 2  # header + the one trade at t0


def test_query_unknown_symbol_names_the_nearest_and_exits_1(lake: Path) -> None:
    res = trades(lake, "--symbol", "BTC-USDC", *DAY)
    assert res.exit_code == 1 and res.stdout == ""
    assert "no symbol 'BTC-USDC' on okx" in res.stderr and "BTC-USDT" in res.stderr


def test_query_unknown_exchange_lists_known_ones(lake: Path) -> None:
    res = run(
        "query", "quotes", "--config", str(lake), "--exchange", "okex", "--symbol", "BTC-USDT", *DAY
    )
    assert res.exit_code == 1 and "no exchange 'okex'" in res.stderr and "okx" in res.stderr


def test_query_outside_the_data_gives_its_range_and_ms_is_spotted(lake: Path) -> None:
    res = trades(lake, "--symbol", "BTC-USDT", "--start", "2022-06-01", "--end", "2022-06-02")
    assert res.exit_code == 1 and "covers 2022-05-13 .. 2022-05-13" in res.stderr
    ms = trades(lake, "--symbol", "BTC-USDT", "--start", "1652400000000", "--end", "1652486400000")
    assert ms.exit_code == 1 and "looks like epoch milliseconds" in ms.stderr
    assert "1652400000000000000" in ms.stderr


def test_query_book_table_has_a_header_and_json_carries_state(lake: Path) -> None:
    args = ["query", "book", "--config", str(lake), "--exchange", "okx", "--symbol", "BTC/USDT"]
    table = run(*args, "--at", "2022-05-13T16:27:10Z", "--depth", "3")
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith("okx BTC-USDT at 2022-05-13T16:27:10Z: valid; snapshot 2022-")
    assert ["#", "bid", "size", "bid", "ask", "ask", "size"] in [
        line.split() for line in table.stdout.splitlines()
    ]
    doc = json.loads(run(*args, "--at", "2022-05-13T16:27:10Z", "--json").stdout)
    assert doc["valid"] is True and doc["gap"] is None and doc["stale"] is False
    assert doc["ts"] == "2022-05-13T16:27:10Z" and doc["snapshot_ts"].startswith(
        "2022-05-13T16:27:05"
    )
    assert 0 <= doc["age_s"] < 5 and doc["book_epoch"] == 1 and len(doc["bids"]) == 10


def test_query_book_after_the_data_ends_is_stale_with_a_warning(lake: Path) -> None:
    args = ["query", "book", "--config", str(lake), "--exchange", "okx", "--symbol", "BTC-USDT"]
    res = run(*args, "--at", "2022-05-13T20:27:10Z", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["stale"] is True and doc["age_s"] > 4 * 3600 - 60
    assert "warning: the book's last update is 3h 59m" in res.stderr
    none = run(*args, "--at", "2022-05-12T10:00:00Z")
    assert none.exit_code == 1 and "covers 2022-05-13 .. 2022-05-13" in none.stderr


def test_catalog_lists_tables_symbols_dates_and_rows(lake: Path) -> None:
    res = run("--config", str(lake), "catalog")
    assert res.exit_code == 0, res.output
    row = next(line.split() for line in res.stdout.splitlines() if line.split()[:1] == ["trades"])
    assert row[:6] == ["trades", "okx", "BTC-USDT", "2022-05-13", "2022-05-13", "1"]
    assert row[6] == "69"
    data = json.loads(run("catalog", "--config", str(lake), "--json", "--table", "quotes").stdout)
    assert [(e["table"], e["symbol"], e["rows"]) for e in data] == [("quotes", "BTC-USDT", 25)]
    empty = run("catalog", "--config", str(lake), "--exchange", "kraken")
    assert empty.exit_code == 1 and "no data for exchange 'kraken'" in empty.stderr


def test_cli_version_short_help_and_group_level_config(lake: Path) -> None:
    assert run("--version").stdout.startswith("fluxforge, version ")
    assert "Shell completion" in run("-h").stdout and "Usage:" in run("query", "book", "-h").stdout
    res = run("--config", str(lake), "status")
    assert res.exit_code == 0 and "processing lag:" in res.stdout
    assert "None" not in res.stdout and "{" not in res.stdout


def test_shell_completion_offers_exchanges_and_symbols_from_the_catalog(lake: Path) -> None:
    env = {"_FLUXFORGE_COMPLETE": "bash_complete", "COMP_WORDS": "", "COMP_CWORD": "0"}
    words = f"fluxforge query trades --config {lake} --exchange okx --symbol B"
    env |= {"COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    res = CliRunner().invoke(main, [], env=env, prog_name="fluxforge")
    assert "plain,BTC-USDT" in res.stdout


def test_query_bars_of_a_day_without_sql_models_come_from_the_lake_trades(lake: Path) -> None:
    res = run(
        "query", "bars", "--config", str(lake), "--exchange", "okx", "--symbol", "BTC-USDT",
        *DAY, "--format", "json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    bars = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(b["ts"], b["trade_count"]) for b in bars] == [("2022-05-13T16:27:00Z", 69)]
    assert (bars[0]["open"], bars[0]["high"], bars[0]["low"]) == ("30236", "30251.7", "30220.1")
