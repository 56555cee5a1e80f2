"""`fluxforge lake ...` and `fluxforge rebuild`: upkeep of the Delta lake tables."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from fluxforge.config import load_config

log = logging.getLogger("fluxforge")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $FLUXFORGE_CONFIG, else config/fluxforge.yaml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON report.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")


def _emit(out: dict[str, Any] | list[Any], as_json: bool, lines: list[str]) -> None:
    import orjson

    if as_json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        for line in lines:
            click.echo(line)


@click.group("lake")
def lake_group() -> None:
    """Upkeep of the lake's Delta tables: compact, vacuum, stale, migrate."""


@lake_group.command("compact")
@config_option
@click.option("--table", "tables", multiple=True, help="Only these tables (repeatable).")
@click.option("--date", default=None, help="Only this date (YYYY-MM-DD), closed or not.")
@dry_run_option
@json_option
def lake_compact(
    config_path: str | None, tables: tuple[str, ...], date: str | None, dry_run: bool, as_json: bool
) -> None:
    """Rewrite each closed day's per-segment files into one sorted file per partition."""
    from fluxforge.lake_upkeep import compact

    cfg = load_config(config_path)
    _check_tables(tables)
    report = compact(cfg, list(tables) or None, date, dry_run)
    out = report.to_dict()
    verb = "would compact" if dry_run else "compacted"
    lines = [
        f"{c.table} {c.exchange}/{c.symbol}/{c.date}: {c.files_in} files -> {c.files_out}"
        f" ({c.rows} rows)"
        for c in report.compacted
    ]
    lines.append(f"{verb} {out['partitions_compacted']} partition(s): {out['files_in']} files in")
    _emit(out, as_json, lines)


@lake_group.command("vacuum")
@config_option
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Keep files older versions used this long (default: lake.vacuum_retention_days).",
)
@dry_run_option
@json_option
def lake_vacuum(
    config_path: str | None, retention_days: float | None, dry_run: bool, as_json: bool
) -> None:
    """Delete files no table version within the retention period still uses."""
    from fluxforge.lake_upkeep import vacuum

    cfg = load_config(config_path)
    report = vacuum(cfg, dry_run, retention_days)
    out = report.to_dict()
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{t}: {n} file(s)" for t, n in sorted(report.vacuumed.items()) if n]
    lines.append(f"{verb} {out['files_vacuumed']} file(s)")
    _emit(out, as_json, lines)


@lake_group.command("stale")
@config_option
@json_option
def lake_stale(config_path: str | None, as_json: bool) -> None:
    """Partitions built by older normalizer / book-engine versions (rebuild them)."""
    from dataclasses import asdict

    from fluxforge.lake_upkeep import stale

    found = stale(load_config(config_path))
    lines = [
        f"{p.table} {p.exchange}/{p.symbol}/{p.date}: built with {p.built_with}, now {p.current}"
        for p in found
    ]
    lines.append(
        f"{len(found)} stale partition(s)"
        + (
            f" on {len({p.date for p in found})} date(s): fluxforge rebuild --date D"
            if found
            else ""
        )
    )
    _emit([asdict(p) for p in found], as_json, lines)


@lake_group.command("migrate")
@config_option
@dry_run_option
@json_option
def lake_migrate(config_path: str | None, dry_run: bool, as_json: bool) -> None:
    """Turn a part-file lake (before Delta) into Delta tables in place, and rewrite tables of
    older column types (int64 ns times, decimal(38, 18) prices/sizes) to the current ones (one
    commit each); safe to run again."""
    from fluxforge.lake_upkeep import migrate

    report = migrate(load_config(config_path), dry_run)
    lines = [f"{t}: {what}" for t, what in sorted(report.tables.items())]
    _emit(report.to_dict(), as_json, lines)


@click.command("rebuild")
@config_option
@click.option("--date", "dates", multiple=True, help="UTC date YYYY-MM-DD (repeatable).")
@click.option("--source", default=None, help="Check that this source has segments that day.")
@click.option("--stale", "all_stale", is_flag=True, help="Every date with stale partitions.")
@json_option
def rebuild(
    config_path: str | None,
    dates: tuple[str, ...],
    source: str | None,
    all_stale: bool,
    as_json: bool,
) -> None:
    """Re-derive whole days from the archived raw segments, one replacing commit per table."""
    import datetime as dt

    from fluxforge.lake_upkeep import stale_dates
    from fluxforge.refinery import rebuild as rebuild_day

    cfg = load_config(config_path)
    wanted = list(dates) + (stale_dates(cfg) if all_stale else [])
    if not wanted:
        raise click.UsageError("give --date YYYY-MM-DD (repeatable) or --stale")
    for day in wanted:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise click.BadParameter(f"{day!r} is not YYYY-MM-DD", param_hint="--date") from None
    out = []
    for day in sorted(set(wanted)):
        try:
            report = rebuild_day(cfg, source, day, progress=log.info)
        except FileNotFoundError as exc:
            click.echo(f"fluxforge rebuild: {exc}", err=True)
            sys.exit(1)
        out.append({"date": day, **report.to_dict()})
        if not as_json:
            click.echo(f"{day}: rebuilt from {len(report.segments)} segment(s), rows {report.rows}")
    if as_json:
        _emit(out, True, [])


def _check_tables(tables: tuple[str, ...]) -> None:
    from fluxforge.lake import TABLES

    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise click.BadParameter(
            f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}",
            param_hint="--table",
        )
