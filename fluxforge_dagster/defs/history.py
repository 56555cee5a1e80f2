"""History backfill from exchange REST APIs through ccxt (docs/architecture.md, "Backfills"): a job
launched from the UI launchpad (or a schedule/sensor a user adds) with the range as run config. The
op makes one call into `fluxforge.history` and reports rows, requests and files as metadata.

An op job rather than an asset: a backfill writes day parts of the existing `trades` table (whose
asset is the refinery's, partitioned by date x source) and of `ohlcv` for an arbitrary
(exchange, symbol, range); the lake files it writes are the record."""

from typing import Any

import dagster as dg
from pydantic import Field

from fluxforge_dagster.defs.resources import FluxForgeResource

HISTORY_JOB = "history_backfill_job"


class HistoryBackfill(dg.Config):
    """What to fetch: [start, end) of one ccxt symbol on one exchange."""

    exchange: str = Field(description="ccxt exchange id, e.g. binance")
    symbol: str = Field(description="ccxt symbol BASE/QUOTE, e.g. BTC/USDT")
    start: str = Field(description="ISO-8601 (naive = UTC) or integer ns, inclusive")
    end: str = Field(description="ISO-8601 (naive = UTC) or integer ns, exclusive")
    what: str = Field(default="both", description="ohlcv | trades | both")
    timeframe: str = Field(default="1m", description="OHLCV bar interval")
    limit: int = Field(default=1000, ge=1, description="rows per REST request")
    hot: bool = Field(default=True, description="load hot-window days into the hot tables")
    ccxt_options: dict[str, Any] = Field(
        default_factory=dict,
        description="ccxt constructor options (urls, rateLimit, ...); a 'markets' list is "
        "installed with set_markets instead of loading markets",
    )


@dg.op(out=dg.Out(dg.Nothing), description="Fetch trades/OHLCV over REST into the lake")
def history_backfill(
    context: dg.OpExecutionContext, config: HistoryBackfill, fluxforge: FluxForgeResource
) -> None:
    from fluxforge.history import backfill_and_load

    options = dict(config.ccxt_options)
    markets = options.pop("markets", None)
    report = backfill_and_load(
        fluxforge.load(),
        config.exchange,
        config.symbol,
        config.start,
        config.end,
        config.what,  # type: ignore[arg-type]
        config.timeframe,
        hot=config.hot,
        ccxt_options=options or None,
        markets=markets,
        limit=config.limit,
    ).to_dict()
    context.add_output_metadata(
        {
            "trades_written": report["trades_written"],
            "trades_already_streamed": report["trades_already_streamed"],
            "bars_written": report["bars_written"],
            "requests": report["requests"],
            "bytes": report["bytes"],
            "files": dg.MetadataValue.json(report["files"]),
            "hot_rows": dg.MetadataValue.json(report["hot_rows"]),
        }
    )


@dg.job(name=HISTORY_JOB, description="Backfill trades / OHLCV of a range from exchange REST")
def history_backfill_job() -> None:
    history_backfill()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[history_backfill_job])
