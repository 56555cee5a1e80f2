"""The `fluxforge` command. Logging is configured here, once; commands call the library."""

from __future__ import annotations

import logging
import sys

import click

from fluxforge.config import ConfigError, load_config
from fluxforge.redact import install_log_redaction, quiet_client_debug, redact, redact_exc

log = logging.getLogger("fluxforge")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()
    quiet_client_debug()


class _Group(click.Group):
    """Turns configuration errors into one clear line and exit code 2, and any other failure
    into one redacted line naming it and exit code 1 (the traceback, redacted, with -v)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"fluxforge: {redact(exc)}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            log.debug("traceback", exc_info=True)
            click.echo(f"fluxforge {ctx.invoked_subcommand or ''}: {redact_exc(exc)}", err=True)
            sys.exit(1)


def _group_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A command's --config, else the one given before the command (``fluxforge --config F
    status``)."""
    root = ctx.find_root()
    return value or (root.params.get("config_path") if root is not ctx else None)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    callback=_group_config,
    help="Config file (default: $FLUXFORGE_CONFIG, else config/fluxforge.yaml).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fluxforge", prog_name="fluxforge")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file for every command (a command's own --config wins).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(config_path: str | None, verbose: bool) -> None:
    """FluxForge: crypto market data from raw feed to research-ready tables.

    \b
    Shell completion (exchanges and symbols come from the lake's catalog):
      bash: eval "$(_FLUXFORGE_COMPLETE=bash_source fluxforge)"
      zsh:  eval "$(_FLUXFORGE_COMPLETE=zsh_source fluxforge)"
      fish: _FLUXFORGE_COMPLETE=fish_source fluxforge | source
    """
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


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar (it is shown only on a terminal)."
)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
@click.option(
    "--recover",
    is_flag=True,
    help="First move segments a killed run left in processing/ back to ready/ "
    "(only when no other refinery runs).",
)
@quiet_option
def process(config_path: str | None, as_json: bool, recover: bool, quiet: bool) -> None:
    """Process every ready segment once, without Dagster (ready -> lake -> archive)."""
    import orjson

    from fluxforge import progress
    from fluxforge.refinery import list_segments, process_ready

    cfg = load_config(config_path)
    show = progress.enabled(quiet)
    total = len(list_segments(cfg, "ready")) if show else None
    with progress.bar("process", total, "segments", show) as step:
        report = process_ready(cfg, progress=step, recover=recover)
    out = report.to_dict()
    log.info(
        "processed %d segment(s): %d lines, %d trades, %d quotes, %d quarantined, %d failed",
        len(report.segments), report.lines, report.trades, report.quotes,
        report.quarantined, len(report.failed),
    )  # fmt: skip
    _say_held(report.held, report.stray)
    if as_json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()
    # work not done (a failure, or a source held behind an unsettled segment): non-zero
    sys.exit(1 if report.failed or report.held else 0)


# --- per-source order: recover, writeoff (fluxforge.refinery discovery/claim path) ------------


def _say_held(held: list[dict[str, str]], stray: list[str]) -> None:
    for hold in held:
        click.echo(
            f"fluxforge: HELD {hold['source']} at {hold['segment']} ({hold['state']}/): "
            f"{hold['reason']}",
            err=True,
        )
    for key in stray:
        click.echo(
            f"fluxforge: stray file {key}: not a segment (segment_YYYYMMDDTHH_NNNNN.ndjson in "
            "a source folder), never processed: move it away",
            err=True,
        )


@main.command()
@config_option
def recover(config_path: str | None) -> None:
    """Release segments a killed run left in processing/ back to ready/ (safe at any time:
    never beside a running `process`, never a live Dagster run's claims)."""
    from fluxforge.refinery import holds, release_processing

    cfg = load_config(config_path)
    moved = release_processing(cfg)
    for ref in moved:
        click.echo(f"released {ref} -> ready/")
    left = holds(cfg)
    for hold in left.values():
        click.echo(f"still held: {hold.line()}", err=True)
    click.echo(f"{len(moved)} segment(s) released; next: fluxforge process")
    sys.exit(1 if left else 0)


@main.command()
@config_option
@click.argument("segment")
@click.option("--reason", required=True, help="Why it is given up (kept with the segment).")
def writeoff(config_path: str | None, segment: str, reason: str) -> None:
    """Give SEGMENT (SOURCE/segment_....ndjson) up: to failed/ with the reason; its source goes
    on after it, its books start afresh from the next snapshot."""
    from fluxforge.refinery import SegmentRef
    from fluxforge.refinery import writeoff as write_off
    from fluxforge.segments import parse_segment_name

    source, _, name = segment.rstrip("/").rpartition("/")
    source = source.rsplit("/", 1)[-1]
    try:
        parse_segment_name(name)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; expected SOURCE/segment_....ndjson") from None
    if not source:
        raise click.BadParameter("expected SOURCE/segment_....ndjson (the source folder too)")
    record = write_off(load_config(config_path), SegmentRef(source, name), reason)
    click.echo(f"written off {record['segment']} (was in {record['was_in']}/): {reason}")


# --- query and catalog: answers for people (formatting in fluxforge.render) -------------------


@main.group()
def query() -> None:
    """Query any instant or range, whichever tier holds it.

    Symbols: BTC-USDT or BTC/USDT. Ranges: --start inclusive, --end exclusive."""


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


def _complete_catalog(field: str):
    """Shell completion of --exchange / --symbol from the lake's catalog."""

    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
        from fluxforge import catalog

        try:
            entries = catalog.of_config(load_config(ctx.params.get("config_path")))
        except Exception:  # completion must never print a traceback into the shell
            return []
        exchange = ctx.params.get("exchange")
        names = {
            getattr(e, field)
            for e in entries
            if field == "exchange" or exchange is None or e.exchange == exchange
        }
        return sorted(n for n in names if n.lower().startswith(incomplete.lower()))

    return complete


def _symbol(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from fluxforge.symbols import SymbolError, lake_symbol

    try:
        return None if value is None else lake_symbol(value)
    except SymbolError as exc:
        raise click.BadParameter(str(exc)) from None


exchange_option = click.option(
    "--exchange", required=True, shell_complete=_complete_catalog("exchange")
)
symbol_option = click.option(
    "--symbol",
    required=True,
    callback=_symbol,
    shell_complete=_complete_catalog("symbol"),
    help="BTC-USDT or BTC/USDT.",
)
_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
_output_option = click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Write to this file (any format; required for parquet, '-' = stdout pipe).",
)
_ns_option = click.option("--ns", is_flag=True, help="Times as integer ns (default: ISO-8601 UTC).")


def _fail(lines: list[str], code: int = 1) -> None:
    for line in lines:
        click.echo(f"fluxforge: {line}", err=True)
    sys.exit(code)


def _answer(tbl, fmt: str, output: str | None, ns: bool, title: str, explain) -> None:
    """Write a range answer; an empty one explains itself on stderr and exits 1."""
    from fluxforge.render import RenderError, write_table

    if tbl.num_rows == 0:
        _fail(["no rows matched", *explain()])
    try:
        write_table(tbl, fmt, output, ns=ns, title=title)
    except RenderError as exc:
        _fail([str(exc)], 2)


def _explainer(config_path, table: str, exchange: str, symbol: str, t0: int, t1: int, raw):
    def explain() -> list[str]:
        from fluxforge import catalog

        entries = catalog.of_config(load_config(config_path), (table,))
        return catalog.explain_empty(entries, table, exchange, symbol, t0, t1, raw)

    return explain


def _bounds(start: str, end: str) -> tuple[int, int]:
    """[start, end) as ns with the inclusive last ns the readers take (fluxforge.symbols)."""
    from fluxforge.query import QueryError, parse_time
    from fluxforge.symbols import end_inclusive

    try:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    if t1 <= t0:
        raise click.BadParameter(f"end ({end}) must be after start ({start})")
    return t0, end_inclusive(t1)


@query.command("book")
@config_option
@as_of_option
@exchange_option
@symbol_option
@click.option(
    "--at", "at", required=True, help="ISO-8601 time or integer ns (receive time unless --time)."
)
@click.option("--depth", type=click.IntRange(min=1, max=5000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the book as one JSON object.")
@_ns_option
@click.option(
    "--time",
    "time_kind",
    type=click.Choice(["recv", "event"]),
    default="recv",
    show_default=True,
    help="--at is a receive time, or the venue's event time.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0),
    default=None,
    help="Warn when the book's last update is older than S seconds before --at "
    "(default: dagster.stale_book_after_s).",
)
def query_book(
    config_path: str | None,
    exchange: str,
    symbol: str,
    at: str,
    depth: int,
    as_json: bool,
    ns: bool,
    time_kind: str,
    max_age: float | None,
) -> None:
    """The order book at one instant: nearest snapshot, then deltas up to --at."""
    import orjson

    from fluxforge.query import QueryError, parse_time
    from fluxforge.render import book_document, human_duration, iso, render_book

    cfg = load_config(config_path)
    try:
        kind = "event" if time_kind == "event" else "recv"
        book = _reader(config_path).book_at(exchange, symbol, at, depth, kind)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    if book.snapshot_ts is None:
        t = parse_time(at, "at")
        explain = _explainer(config_path, "book_snapshots", exchange, symbol, t, t, (at,))
        _fail([f"no book snapshot at or before {iso(t)} on its UTC day", *explain()])
    if not book.valid and book.gap is not None:
        click.echo(
            f"no valid book at {iso(book.ts)}: epoch {book.gap['book_epoch']} ended at "
            f"{iso(book.gap['ts_to'])} ({book.gap['cause']}: {book.gap['detail']}); the next "
            "exchange snapshot starts a new one",
            err=True,
        )
    limit = cfg.dagster.stale_book_after_s if max_age is None else max_age
    doc = book_document(book.to_dict(), limit, ns=ns)
    if book.valid and doc["stale"]:
        click.echo(
            f"warning: the book's last update is {human_duration(doc['age_s'])} before "
            f"{iso(book.ts)} (more than {human_duration(limit)}): the data may end earlier "
            "(see `fluxforge catalog`)",
            err=True,
        )
    if as_json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    click.echo(render_book(book_document(book.to_dict(), limit)), nl=False)


def _range_command(table: str):
    @query.command(table, help=f"{table.capitalize()} in [--start, --end), across hot and cold.")
    @config_option
    @as_of_option
    @exchange_option
    @symbol_option
    @click.option("--start", required=True, help="ISO-8601 or integer ns, inclusive.")
    @click.option("--end", required=True, help="ISO-8601 or integer ns, exclusive.")
    @click.option("--time", "time_kind", type=click.Choice(["recv", "event"]), default="recv")
    @_format_option
    @_output_option
    @_ns_option
    def _cmd(config_path, exchange, symbol, start, end, time_kind, fmt, output, ns) -> None:
        from fluxforge.query import QueryError

        t0, t1 = _bounds(start, end)
        try:
            tbl = getattr(_reader(config_path), table)(exchange, symbol, t0, t1, time_kind)
        except QueryError as exc:
            raise click.BadParameter(str(exc)) from None
        explain = _explainer(config_path, table, exchange, symbol, t0, t1, (start, end))
        _answer(tbl, fmt, output, ns, f"{exchange} {symbol} {table}", explain)

    return _cmd


for _table in ("trades", "quotes"):
    _range_command(_table)


@query.command("bars")
@config_option
@as_of_option
@exchange_option
@symbol_option
@click.option("--start", required=True, help="ISO-8601 or integer ns (bar start, inclusive).")
@click.option("--end", required=True, help="ISO-8601 or integer ns (bar start, exclusive).")
@click.option("--interval", type=click.Choice(["1m", "5m", "1h", "1d"]), default="1m")
@_format_option
@_output_option
@_ns_option
def query_bars(
    config_path: str | None,
    exchange: str,
    symbol: str,
    start: str,
    end: str,
    interval: str,
    fmt: str,
    output: str | None,
    ns: bool,
) -> None:
    """OHLCV bars (VWAP, trade count): hot days from PostgreSQL, older from the SQL models,
    days without models computed from the lake's trades by the same rule."""
    from fluxforge.query import QueryError

    t0, t1 = _bounds(start, end)
    try:
        tbl = _reader(config_path).bars(exchange, symbol, t0, t1, interval)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    # bars come from the hot store, the SQL models, else the lake's trades: no trades, no bars
    explain = _explainer(config_path, "trades", exchange, symbol, t0, t1, (start, end))
    _answer(tbl, fmt, output, ns, f"{exchange} {symbol} bars {interval}", explain)


@main.command("catalog")
@config_option
@click.option("--table", "tables", multiple=True, help="Only these tables (repeatable).")
@click.option("--exchange", default=None, shell_complete=_complete_catalog("exchange"))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def catalog_cmd(
    config_path: str | None, tables: tuple[str, ...], exchange: str | None, as_json: bool
) -> None:
    """What the lake holds: tables, exchanges, symbols, date ranges, rows (from metadata)."""
    import orjson

    from fluxforge import catalog
    from fluxforge.render import render_catalog
    from fluxforge.tables import SCHEMAS

    unknown = [t for t in tables if t not in SCHEMAS]
    if unknown:
        raise click.BadParameter(f"{unknown}: allowed {', '.join(SCHEMAS)}", param_hint="--table")
    entries = catalog.of_config(load_config(config_path), tables or None)
    if exchange is not None:
        entries = [e for e in entries if e.exchange == exchange]
    if as_json:
        sys.stdout.write(orjson.dumps([e.to_dict() for e in entries]).decode() + "\n")
    else:
        click.echo(render_catalog(entries), nl=False)
    if not entries:
        _fail(["the lake holds no data" + (f" for exchange {exchange!r}" if exchange else "")])


# --- plot: pictures of the data (drawing in fluxforge.plots, rows from fluxforge.plotdata) ----


@main.group()
def plot() -> None:
    """Draw coverage, bars, a book or feed latency into a .png or .html file."""


_plot_output = click.option(
    "--output", required=True, type=click.Path(dir_okay=False), help="A .png or .html file."
)


def _save(fig_of, output: str, title: str) -> None:
    from fluxforge.plots import PlotError, save

    try:
        path = save(fig_of(), output, title)
    except PlotError as exc:
        _fail([str(exc)])
    click.echo(f"wrote {path}", err=True)


def _days(start: str, end: str):
    from fluxforge.query import ns_to_date

    t0, t1 = _bounds(start, end)
    return ns_to_date(t0), ns_to_date(t1)


@plot.command("coverage")
@config_option
@click.option("--exchange", default=None, shell_complete=_complete_catalog("exchange"))
@click.option("--start", required=True, help="ISO-8601 date/time, inclusive.")
@click.option("--end", required=True, help="ISO-8601 date/time, exclusive.")
@_plot_output
def plot_coverage(config_path, exchange, start, end, output) -> None:
    """Heatmap: rows per exchange·symbol × UTC hour, gaps marked."""
    from fluxforge import plotdata, plots

    first, last = _days(start, end)
    cov = plotdata.coverage(load_config(config_path), first, last, exchange)
    _save(lambda: plots.coverage_figure(cov, f"{first} .. {last}"), output, "coverage")


@plot.command("bars")
@config_option
@exchange_option
@symbol_option
@click.option("--start", required=True, help="ISO-8601 or integer ns (bar start, inclusive).")
@click.option("--end", required=True, help="ISO-8601 or integer ns (bar start, exclusive).")
@click.option("--interval", type=click.Choice(["1m", "5m", "1h", "1d"]), default="1m")
@_plot_output
def plot_bars(config_path, exchange, symbol, start, end, interval, output) -> None:
    """Candlesticks with volume."""
    from fluxforge import plots

    t0, t1 = _bounds(start, end)
    bars = _reader(config_path).bars(exchange, symbol, t0, t1, interval)
    title = f"{exchange} {symbol} {interval} bars"
    _save(lambda: plots.bars_figure(bars, title), output, title)


@plot.command("book")
@config_option
@exchange_option
@symbol_option
@click.option("--at", "at", required=True, help="ISO-8601 time or integer ns (receive time).")
@click.option("--depth", type=click.IntRange(min=1, max=5000), default=50, show_default=True)
@_plot_output
def plot_book(config_path, exchange, symbol, at, depth, output) -> None:
    """Cumulative book depth at one instant."""
    from fluxforge import plots
    from fluxforge.query import QueryError
    from fluxforge.render import book_document

    try:
        book = _reader(config_path).book_at(exchange, symbol, at, depth)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    doc = book_document(book.to_dict())
    _save(lambda: plots.book_figure(doc), output, f"{exchange} {symbol} book")


@plot.command("latency")
@config_option
@click.option("--exchange", default=None, shell_complete=_complete_catalog("exchange"))
@click.option("--start", required=True, help="ISO-8601 date/time, inclusive.")
@click.option("--end", required=True, help="ISO-8601 date/time, exclusive.")
@_plot_output
def plot_latency(config_path, exchange, start, end, output) -> None:
    """Receive-minus-event latency (p50, p99): hourly from the feed_stats table, else from
    trades, quotes and book deltas in buckets chosen from the span."""
    from fluxforge import plotdata, plots

    first, last = _days(start, end)
    cfg = load_config(config_path)
    # the refinery's hourly feed statistics where present, else computed from the rows
    lat = plotdata.latency_from_feed_stats(cfg, first, last, exchange)
    if lat is None:
        lat = plots.latency_table(plotdata.latency_rows(cfg, first, last, exchange))
    _save(lambda: plots.latency_figure(lat, f"feed latency {first} .. {last}"), output, "latency")


# --- sql: the dbt project of the SQL models (fluxforge.sql_models) -----------------------------


@main.group()
def sql() -> None:
    """Build / test the SQL models of dbt_like_sql/ with dbt (dbt-duckdb over the lake)."""


_select_option = click.option(
    "--select",
    "-s",
    "select",
    multiple=True,
    help="dbt selector: name, +name (with upstream), name+ (with downstream), tag:...; repeatable.",
)
_project_option = click.option(
    "--project",
    "project_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="dbt project directory (default: the repository's dbt_like_sql/).",
)
_dates_option = click.option(
    "--date",
    "dates",
    multiple=True,
    help="Refresh only this date (YYYY-MM-DD; repeatable). Default: every date.",
)


def _sql_command(
    command: str,
    config_path: str | None,
    select: tuple[str, ...],
    project_dir: str | None,
    dates: tuple[str, ...],
    full_refresh: bool,
    as_json: bool,
) -> None:
    import json

    from fluxforge import sql_models

    cfg = load_config(config_path)
    try:
        result = sql_models.invoke(
            cfg,
            command,
            select=list(select),
            dates=list(dates) or None,
            full_refresh=full_refresh,
            project_dir=project_dir,
        )
    except sql_models.SqlModelsError as exc:
        click.echo(f"fluxforge sql {command}: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
    else:
        for n in result.nodes:
            detail = n.message or (f"{n.failures} failing rows" if n.failures else "")
            click.echo(f"{n.status:8} {n.kind:6} {n.name} {detail}".rstrip())
        counts = result.counts()
        click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing ran")
    sys.exit(0 if result.ok else 1)


for _name, _doc in (
    ("run", "dbt run: build the selected models (all by default) in dependency order."),
    ("test", "dbt test: the YAML data tests and singular tests (of the selected models)."),
    ("build", "dbt build: models and their tests; a failing test skips what is downstream."),
):

    def _make(command: str, doc: str) -> None:
        @sql.command(command, help=doc)
        @config_option
        @_select_option
        @_project_option
        @_dates_option
        @click.option("--full-refresh", is_flag=True, help="Rebuild the marts from scratch.")
        @click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
        def _cmd(
            config_path: str | None,
            select: tuple[str, ...],
            project_dir: str | None,
            dates: tuple[str, ...],
            full_refresh: bool,
            as_json: bool,
        ) -> None:
            _sql_command(command, config_path, select, project_dir, dates, full_refresh, as_json)

    _make(_name, _doc)


@sql.command("profile")
@config_option
@click.option(
    "--profiles-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write profiles.yml (default: beside the DuckDB database).",
)
def sql_profile(config_path: str | None, profiles_dir: str | None) -> None:
    """Write the dbt profile for the config and print its folder (for `dbt --profiles-dir`)."""
    from fluxforge.dbt_profile import default_profiles_dir, write_profiles

    cfg = load_config(config_path)
    path = write_profiles(cfg, profiles_dir or default_profiles_dir(cfg))
    click.echo(str(path.parent))


# --- tier: raw segment tiering + manifest (fluxforge.tiering) -----------------------------------


@main.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print the planned moves; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report on stdout.")
@quiet_option
def tier(config_path: str | None, dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Move archived raw segments hot -> warm -> cold by age and update the manifest."""
    import json

    from fluxforge import progress, tiering

    cfg = load_config(config_path)
    try:
        show = progress.enabled(quiet)  # off: tiering logs each move itself
        with progress.bar("tier", None, "segments", show) as step:
            report = tiering.tier(cfg, dry_run=dry_run, progress=step if show else None)
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
    from fluxforge.render import human_bytes

    per_tier = ", ".join(f"{t} {n}" for t, n in sorted(report.segments.items())) or "none"
    click.echo(
        f"{len(report.moves)} segments {verb} ({human_bytes(report.bytes_moved)}), "
        f"{report.registered} registered; segments per tier: {per_tier}"
    )


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--feeds", is_flag=True, help="Feed statistics per hour (latency, clock offset, gaps)."
)
@click.option("--date", default=None, help="With --feeds: one UTC date (YYYY-MM-DD).")
@click.option("--exchange", default=None, help="With --feeds: one exchange.")
def status(
    config_path: str | None, as_json: bool, feeds: bool, date: str | None, exchange: str | None
) -> None:
    """Ready backlog, processing lag, hot-table sizes per day, last runs, open gaps."""
    import orjson

    from fluxforge.status import collect, render

    if feeds:
        _status_feeds(config_path, as_json, date, exchange)
        return
    info = collect(load_config(config_path))
    if as_json:
        sys.stdout.write(orjson.dumps(info).decode() + "\n")
    else:
        click.echo(render(info))


def _status_feeds(
    config_path: str | None, as_json: bool, date: str | None, exchange: str | None
) -> None:
    import datetime

    import orjson

    from fluxforge import feed_stats
    from fluxforge.storage import Layout, open_storage

    if date is not None:
        try:
            datetime.date.fromisoformat(date)
        except ValueError:
            msg = f"{date!r} is not a YYYY-MM-DD date"
            raise click.BadParameter(msg, param_hint="--date") from None
    layer = load_config(config_path).storage.etl_output
    table = feed_stats.read(open_storage(layer), exchange, None, date, Layout.of(layer))
    if as_json:
        rows = [{**r, "hour": r["hour"].isoformat()} for r in table.to_pylist()]
        sys.stdout.write(orjson.dumps({"feeds": rows}).decode() + "\n")
    else:
        click.echo(feed_stats.render(table))


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
    with hot_dsn(cfg, "fluxforge hot load") as dsn:
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
@quiet_option
def rotate(
    config_path: str | None,
    dry_run: bool,
    analyze_only: bool,
    force: bool,
    hot_days: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Move hot days older than hot_days to cold Parquet, then drop them (the rotation of
    docs/architecture.md)."""
    import orjson

    from fluxforge import progress
    from fluxforge.lifecycle import rotate as run_rotation
    from fluxforge.pgserver import hot_dsn

    cfg = load_config(config_path)
    show = progress.enabled(quiet)
    with (
        hot_dsn(cfg, "fluxforge rotate") as dsn,
        progress.bar("rotate", None, "partitions", show) as step,
    ):

        def hook(name: str, table: str, day: object) -> None:
            if name == "commit":  # one (table, day) partition rotated
                step(f"{table} {day}")

        out = run_rotation(
            cfg, dsn, dry_run=dry_run, analyze_only=analyze_only, force=force,
            hot_days=hot_days, hook=hook if show else None,  # off: rotation logs each day
        )  # fmt: skip
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
        from fluxforge.render import human_bytes

        click.echo(
            f"{out['partitions_dropped']} partitions dropped, "
            f"{human_bytes(out['bytes_written'])} written"
        )


# --- history: backfill trades / OHLCV from exchange REST through ccxt (fluxforge.history) -----


def _ccxt_symbol(value: str) -> str:
    from fluxforge.symbols import SymbolError, ccxt_symbol

    try:
        return ccxt_symbol(value)
    except SymbolError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@config_option
@click.option("--exchange", required=True, help="ccxt exchange id, e.g. binance.")
@click.option(
    "--symbol",
    required=True,
    callback=lambda _ctx, _param, value: _ccxt_symbol(value),
    help="BTC/USDT or BTC-USDT (BTC/USDT:USDT or BTC-USDT-SWAP for a perpetual).",
)
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
@click.option(
    "--resume", is_flag=True, help="Skip the days a previous run of the same backfill finished."
)
@quiet_option
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
    resume: bool,
    quiet: bool,
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
    from fluxforge import progress
    from fluxforge.history import day_slices

    show = progress.enabled(quiet)
    t0, t1 = _bounds(start, end)
    try:
        with progress.bar("history", len(day_slices(t0, t1 + 1)), "days", show) as step:
            report = backfill_and_load(
                cfg, exchange, symbol, start, end, what, timeframe,  # type: ignore[arg-type]
                hot=hot, ccxt_options=options, markets=markets, limit=limit, resume=resume,
                progress=step,
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
        f"{out['bars_written']} {timeframe} bars, {out['requests']} requests, "
        f"{out['days']} days" + (f" ({out['days_skipped']} already done)" if resume else "")
    )
    for key in out["files"]:
        click.echo(f"  {key}")
    for table, rows in out["hot_rows"].items():
        click.echo(f"  hot {table}: {rows} rows")


@main.command("compile")
def compile_kernels() -> None:
    """Compile every numba kernel into the on-disk cache now, not at the first segment.

    Refines a small bundled segment of every venue's documented shapes in a temporary lake
    (about 1.5 minutes of CPU on 2 cores when the cache is empty, a second when it is full).
    A container image runs it when it is built: a run's pod then starts with a full cache."""
    from fluxforge.jitwarm import warm

    rep = warm()
    what = "compiled and cached" if rep.compiled else "already cached"
    click.echo(f"kernels {what} in {rep.cache_dir} ({rep.seconds:.1f} s)")


def _register_lake_commands() -> None:
    from fluxforge.cli_lake import lake_group, rebuild

    main.add_command(lake_group)
    main.add_command(rebuild)


_register_lake_commands()


if __name__ == "__main__":
    main()
