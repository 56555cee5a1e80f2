"""The `fluxforge` command. Logging is configured here, once; commands call the library."""

from __future__ import annotations

import logging
import sys

import click

from fluxforge.config import ConfigError, load_config

log = logging.getLogger("fluxforge")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class _Group(click.Group):
    """Turns configuration errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"fluxforge: {exc}", err=True)
            sys.exit(2)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $FLUXFORGE_CONFIG, else config/fluxforge.yaml).",
)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """FluxForge: crypto market data from raw feed to research-ready tables."""
    _setup_logging(verbose)


@main.command()
@config_option
@click.option("--source", "sources", multiple=True, help="Run only these sources (repeatable).")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Stop after S s.")
def ingest(config_path: str | None, sources: tuple[str, ...], max_seconds: float | None) -> None:
    """Run the ingestion daemon (seals segments into ready/)."""
    from ingestion_daemon.service import run_daemon

    cfg = load_config(config_path)
    sys.exit(run_daemon(cfg, list(sources) or None, max_seconds))


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
@click.option(
    "--recover",
    is_flag=True,
    help="First move segments a killed run left in processing/ back to ready/ "
    "(only when no other refinery runs).",
)
def process(config_path: str | None, as_json: bool, recover: bool) -> None:
    """Process every ready segment once, without Dagster (ready -> lake -> archive)."""
    import orjson

    from fluxforge.refinery import process_ready

    cfg = load_config(config_path)
    report = process_ready(cfg, progress=log.info, recover=recover)
    out = report.to_dict()
    log.info(
        "processed %d segment(s): %d lines, %d trades, %d quotes, %d quarantined, %d failed",
        len(report.segments), report.lines, report.trades, report.quotes,
        report.quarantined, len(report.failed),
    )  # fmt: skip
    if as_json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()
    sys.exit(1 if report.failed else 0)


@main.group()
def query() -> None:
    """Query any instant or range, whichever tier holds it."""


def _remember_as_of(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["fluxforge.as_of"] = value


as_of_option = click.option(
    "--as-of",
    expose_value=False,
    callback=_remember_as_of,
    help="Read the lake as of a table version (integer) or a time (ISO-8601): Delta time "
    "travel, for reproducible research (the hot store is not read then).",
)


def _reader(config_path: str | None):
    from fluxforge.query import Reader

    as_of = click.get_current_context().meta.get("fluxforge.as_of")
    return Reader(load_config(config_path), as_of=as_of)


@query.command("book")
@config_option
@as_of_option
@click.option("--exchange", required=True)
@click.option("--symbol", required=True)
@click.option(
    "--at", "at", required=True, help="ISO-8601 time or integer ns (receive time unless --time)."
)
@click.option("--depth", type=click.IntRange(min=1, max=5000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the book as one JSON object.")
@click.option(
    "--time",
    "time_kind",
    type=click.Choice(["recv", "event"]),
    default="recv",
    show_default=True,
    help="--at is a receive time, or the venue's event time.",
)
def query_book(
    config_path: str | None,
    exchange: str,
    symbol: str,
    at: str,
    depth: int,
    as_json: bool,
    time_kind: str,
) -> None:
    """The order book at one instant: nearest snapshot, then deltas up to --at."""
    import orjson

    from fluxforge.query import QueryError

    try:
        kind = "event" if time_kind == "event" else "recv"
        book = _reader(config_path).book_at(exchange, symbol, at, depth, kind)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    if not book.valid and book.gap is not None:
        click.echo(
            f"no valid book at {book.ts}: epoch {book.gap['book_epoch']} ended at "
            f"{book.gap['ts_to']} ({book.gap['cause']}: {book.gap['detail']}); the next exchange "
            "snapshot starts a new one",
            err=True,
        )
    if as_json:
        sys.stdout.write(orjson.dumps(book.to_dict()).decode() + "\n")
        return
    click.echo(
        f"{exchange} {symbol} at {book.ts} (snapshot {book.snapshot_ts}, epoch "
        f"{book.book_epoch}, {book.deltas_applied} deltas)"
    )
    for (bp, bs), (ap, az) in zip(book.bids, book.asks, strict=False):
        click.echo(f"{bs:>24} {bp:>24} | {ap:<24} {az:<24}")


def _range_command(table: str):
    @query.command(table, help=f"{table.capitalize()} for a range, routed across hot and cold.")
    @config_option
    @as_of_option
    @click.option("--exchange", required=True)
    @click.option("--symbol", required=True)
    @click.option("--start", required=True, help="ISO-8601 or integer ns, inclusive.")
    @click.option("--end", required=True, help="ISO-8601 or integer ns, inclusive.")
    @click.option("--time", "time_kind", type=click.Choice(["recv", "event"]), default="recv")
    @click.option(
        "--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table"
    )
    @click.option(
        "--output",
        type=click.Path(dir_okay=False),
        default=None,
        help="File for --format parquet (default: stdout).",
    )
    def _cmd(config_path, exchange, symbol, start, end, time_kind, fmt, output) -> None:
        from fluxforge.query import QueryError, write_result

        try:
            tbl = getattr(_reader(config_path), table)(exchange, symbol, start, end, time_kind)
        except QueryError as exc:
            raise click.BadParameter(str(exc)) from None
        write_result(tbl, fmt, output)

    return _cmd


for _table in ("trades", "quotes"):
    _range_command(_table)


@query.command("bars")
@config_option
@as_of_option
@click.option("--exchange", required=True)
@click.option("--symbol", required=True)
@click.option("--start", required=True, help="ISO-8601 or integer ns (bar start, inclusive).")
@click.option("--end", required=True, help="ISO-8601 or integer ns (bar start, inclusive).")
@click.option("--interval", type=click.Choice(["1m", "5m", "1h", "1d"]), default="1m")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table"
)
@click.option("--output", type=click.Path(dir_okay=False), default=None)
def query_bars(
    config_path: str | None,
    exchange: str,
    symbol: str,
    start: str,
    end: str,
    interval: str,
    fmt: str,
    output: str | None,
) -> None:
    """OHLCV bars (VWAP, trade count): hot days from PostgreSQL, older from the SQL models."""
    from fluxforge.query import QueryError, write_result

    try:
        tbl = _reader(config_path).bars(exchange, symbol, start, end, interval)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    write_result(tbl, fmt, output)


# --- sql: the dbt-like SQL models (fluxforge.sqlmodels) ----------------------------------------


@main.group()
def sql() -> None:
    """Run / test the SQL models of dbt_like_sql/ on DuckDB over the lake."""


_select_option = click.option(
    "--select",
    "-s",
    "select",
    multiple=True,
    help="Model name, +name (with upstream) or name+ (with downstream); repeatable.",
)
_project_option = click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="SQL project directory (default: the repository's dbt_like_sql/).",
)


@sql.command("run")
@config_option
@_select_option
@_project_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
def sql_run(
    config_path: str | None, select: tuple[str, ...], project_dir: str | None, as_json: bool
) -> None:
    """Build the selected models (all by default) in dependency order."""
    import json

    from fluxforge import sqlmodels

    cfg = load_config(config_path)
    try:
        result = sqlmodels.run(cfg, list(select) or None, project=project_dir)
    except (sqlmodels.ProjectError, sqlmodels.ModelNotBuiltError) as exc:
        click.echo(f"fluxforge sql run: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        for m in result.models:
            detail = m.error or f"{m.rows} rows, {m.files} files, {m.bytes} bytes"
            click.echo(f"{m.status:8} {m.name:24} {detail if m.status != 'view' else ''}")
    sys.exit(0 if result.ok else 1)


@sql.command("test")
@config_option
@_select_option
@_project_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
def sql_test(
    config_path: str | None, select: tuple[str, ...], project_dir: str | None, as_json: bool
) -> None:
    """Run the YAML column tests and singular tests (of the selected models)."""
    import json

    from fluxforge import sqlmodels

    cfg = load_config(config_path)
    try:
        result = sqlmodels.test(cfg, list(select) or None, project=project_dir)
    except sqlmodels.ProjectError as exc:
        click.echo(f"fluxforge sql test: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        for t in result.tests:
            detail = t.error or (f"{t.failures} failing rows" if t.failures else "")
            click.echo(f"{t.status:5} {t.name} {detail}")
        counts = result.to_dict()["counts"]
        click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests")
    sys.exit(0 if result.ok else 1)


# --- tier: raw segment tiering + manifest (fluxforge.tiering) -----------------------------------


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print the planned moves; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
def tier(config_path: str | None, dry_run: bool, as_json: bool) -> None:
    """Move archived raw segments hot -> warm -> cold by age and update the manifest."""
    import json

    from fluxforge import tiering

    cfg = load_config(config_path)
    try:
        report = tiering.tier(cfg, dry_run=dry_run)
    except tiering.TieringError as exc:
        click.echo(f"fluxforge tier: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    verb = "would move" if dry_run else "moved"
    for m in report.moves:
        click.echo(f"{verb} {m.source}/{m.name}: {m.from_tier} -> {m.to_tier} {m.method}".rstrip())
    for note in report.repaired:
        click.echo(f"repaired {note}")
    for lost in report.missing:
        click.echo(f"MISSING {lost}", err=True)
    click.echo(
        f"{len(report.moves)} segments {verb} ({report.bytes_moved} bytes), "
        f"{report.registered} registered; per tier: {report.segments}"
    )


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def status(config_path: str | None, as_json: bool) -> None:
    """Ready backlog, processing lag, hot-table sizes per day, last runs, open gaps."""
    import orjson

    from fluxforge.status import collect, render

    info = collect(load_config(config_path))
    if as_json:
        sys.stdout.write(orjson.dumps(info).decode() + "\n")
    else:
        click.echo(render(info))


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Dagster UI bind address.")
@click.option("--port", type=int, default=3000, show_default=True, help="Dagster UI port.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None, help="Stop after S s.")
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="Seal a segment every 10 s and tick the sensor every 1 s (visible Parquet in ~10 s).",
)
def up(
    config_path: str | None, host: str, port: int, max_seconds: float | None, demo: bool
) -> None:
    """Run the ingestion daemon and Dagster (webserver + daemon, sensor on) together."""
    from fluxforge.up import run_up, settings_from_cli

    settings = settings_from_cli(config_path, host, port, max_seconds, demo)
    sys.exit(run_up(settings, announce=lambda msg: click.echo(msg, err=True)))


# -- hot store and lifecycle rotation (fluxforge.hot, fluxforge.lifecycle) ----------------------


@main.group()
def hot() -> None:
    """PostgreSQL hot tables (last hot_days of trades, quotes, book snapshots, bars)."""


@hot.command("load")
@config_option
@click.option("--hot-days", type=click.IntRange(min=1), default=None, help="Window (days).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
def hot_load(config_path: str | None, hot_days: int | None, as_json: bool) -> None:
    """Load the lake's days inside the hot window into the hot tables (idempotent)."""
    import orjson

    from fluxforge.hot import load_lake
    from fluxforge.pgserver import hot_dsn

    cfg = load_config(config_path)
    with hot_dsn(cfg) as dsn:
        report = load_lake(cfg, dsn, hot_days=hot_days).to_dict()
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"days: {', '.join(report['days']) or 'none'} ({report['files']} files)")
    for table, rows in report["rows_inserted"].items():
        click.echo(f"{table}: {rows} rows")


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")
@click.option("--analyze-only", is_flag=True, help="Only ANALYZE the hot tables.")
@click.option("--force", is_flag=True, help="Run even if lifecycle.enabled is false.")
@click.option("--hot-days", type=click.IntRange(min=1), default=None, help="Window (days).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan/result as JSON.")
def rotate(
    config_path: str | None,
    dry_run: bool,
    analyze_only: bool,
    force: bool,
    hot_days: int | None,
    as_json: bool,
) -> None:
    """Move hot days older than hot_days to cold Parquet, then drop them (SPEC §6)."""
    import orjson

    from fluxforge.lifecycle import rotate as run_rotation
    from fluxforge.pgserver import hot_dsn

    cfg = load_config(config_path)
    with hot_dsn(cfg) as dsn:
        out = run_rotation(
            cfg, dsn, dry_run=dry_run, analyze_only=analyze_only, force=force, hot_days=hot_days
        )
    if as_json:
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if "skipped" in out or ("analyzed" in out and "plan" not in out):
        click.echo(out.get("skipped") or f"analyzed: {', '.join(out['analyzed'])}")
        return
    parts = out["partitions"] if dry_run else out["rotated"]
    verb = "would rotate" if dry_run else "rotated"
    for part in parts:
        click.echo(f"{verb} {part['table']} {part['day']}: {part['rows']} rows")
    if not parts:
        click.echo("nothing to rotate")
    if not dry_run:
        click.echo(
            f"{out['partitions_dropped']} partitions dropped, {out['bytes_written']} bytes written"
        )


# --- history: backfill trades / OHLCV from exchange REST through ccxt (fluxforge.history) -----


@main.command()
@config_option
@click.option("--exchange", required=True, help="ccxt exchange id, e.g. binance.")
@click.option("--symbol", required=True, help="ccxt symbol BASE/QUOTE, e.g. BTC/USDT.")
@click.option("--start", required=True, help="ISO-8601 (naive = UTC) or integer ns, inclusive.")
@click.option("--end", required=True, help="ISO-8601 (naive = UTC) or integer ns, exclusive.")
@click.option(
    "--what", type=click.Choice(["ohlcv", "trades", "both"]), default="both", show_default=True
)
@click.option("--timeframe", default="1m", show_default=True, help="OHLCV bar interval.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows/request."
)
@click.option(
    "--ccxt-options",
    "ccxt_options_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file: ccxt constructor options (urls, rateLimit, options, ...); a 'markets' "
    "list in it is installed with set_markets instead of loading markets.",
)
@click.option(
    "--hot/--no-hot",
    default=True,
    show_default=True,
    help="Also load trades of days inside the hot window into the PostgreSQL hot tables.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
def history(
    config_path: str | None,
    exchange: str,
    symbol: str,
    start: str,
    end: str,
    what: str,
    timeframe: str,
    limit: int,
    ccxt_options_path: str | None,
    hot: bool,
    as_json: bool,
) -> None:
    """Backfill trades and/or OHLCV of [--start, --end) from the exchange's REST API into the
    lake (trades table; ohlcv table), without repeating trades the stream already wrote."""
    from pathlib import Path

    import orjson

    from fluxforge.history import HistoryError, backfill_and_load

    cfg = load_config(config_path)
    options, markets = None, None
    if ccxt_options_path:
        try:
            options = orjson.loads(Path(ccxt_options_path).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"{ccxt_options_path}: not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise click.BadParameter(f"{ccxt_options_path}: expected a JSON object")
        markets = options.pop("markets", None)
    try:
        report = backfill_and_load(
            cfg, exchange, symbol, start, end, what, timeframe,  # type: ignore[arg-type]
            hot=hot, ccxt_options=options, markets=markets, limit=limit,
        )  # fmt: skip
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    out = report.to_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        return
    click.echo(
        f"{out['exchange']} {out['symbol']} [{out['start']}, {out['end']}): "
        f"{out['trades_written']} trades ({out['trades_already_streamed']} already streamed), "
        f"{out['bars_written']} {timeframe} bars, {out['requests']} requests"
    )
    for key in out["files"]:
        click.echo(f"  {key}")
    for table, rows in out["hot_rows"].items():
        click.echo(f"  hot {table}: {rows} rows")


def _register_lake_commands() -> None:
    from fluxforge.cli_lake import lake_group, rebuild

    main.add_command(lake_group)
    main.add_command(rebuild)


_register_lake_commands()


if __name__ == "__main__":
    main()
