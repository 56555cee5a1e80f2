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
def process(config_path: str | None, as_json: bool) -> None:
    """Process every ready segment once, without Dagster (ready -> lake -> archive)."""
    import orjson

    from fluxforge.refinery import process_ready

    cfg = load_config(config_path)
    report = process_ready(cfg, progress=log.info)
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


if __name__ == "__main__":
    main()
