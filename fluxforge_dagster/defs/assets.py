"""The refinery assets: one step turns a batch of raw segments (or, in a backfill, a whole
archived (date, source) partition) into the six lake tables, then `coverage` summarizes the
partition. Bodies unpack the context, make one call into `fluxforge`, and return metadata."""

from typing import Any

import dagster as dg
from pydantic import Field

from fluxforge import feed_stats, quality
from fluxforge.config import Config, load_config
from fluxforge.render import human_bytes, human_duration
from fluxforge.storage import Layout, open_storage
from fluxforge.tables import PARTITION_COLUMNS, SCHEMAS
from fluxforge_dagster.defs.checks import TABLES, evaluate, table_check_specs
from fluxforge_dagster.defs.partitions import partition_of, refinery_partitions
from fluxforge_dagster.defs.resources import FluxForgeResource


class SegmentBatch(dg.Config):
    """Set by the sensor. Empty (a backfill or a manual launch) = rebuild the partition from
    its archived raw segments."""

    segments: list[str] = Field(
        default_factory=list, description="segment file names claimed into processing/"
    )


RAW_SEGMENTS = "raw_segments"


def column_schema(table: str) -> dg.TableSchema | None:
    """The table's Arrow schema as Dagster's column schema (shown in the asset's overview)."""
    schema = SCHEMAS.get(table)
    if schema is None:
        return None
    hive = [dg.TableColumn(name, "string", description="hive partition") for name in
            PARTITION_COLUMNS]  # fmt: skip
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema] + hive)


def _table_metadata(report: dict[str, Any], table: str) -> dict[str, Any]:
    gaps = sum(int(b.get("gaps", 0)) for b in report.get("books", []))
    rows = int(report.get("rows", {}).get(table, 0))
    size = int(report.get("bytes", {}).get(table, 0))
    lag = float(report.get("lag_s") or 0.0)
    meta: dict[str, Any] = {
        "dagster/row_count": rows,
        "rows": rows,
        "bytes": size,
        "size": human_bytes(size),
        "segments": int(report.get("segments_processed", 0)),
        "lines": int(report.get("lines", 0)),
        "quarantined": int(report.get("quarantined", 0)),
        "gaps": gaps,
        "lag_s": round(lag, 1),
        # segment hour start -> refined: "2d 3h 4m" instead of 183840.3
        "lag": human_duration(lag),
    }
    schema = column_schema(table)
    if schema is not None:
        meta["dagster/column_schema"] = schema
    return meta


def delta_metadata(ff: Config, table: str, date: str) -> dict[str, Any]:
    """Table version, the date's committed rows, URI and schema, from the table's log."""
    from fluxforge.lake import Lake

    lake = Lake.of(ff)
    handle = lake.table(table)
    files = lake.files(table, date=date)
    return {
        "delta_version": -1 if handle is None else handle.version(),
        "dagster/row_count": sum(max(f.rows, 0) for f in files),
        "files_in_date": len(files),
        "dagster/uri": lake.uri(table),
    }


def _run_refinery(cfg: Config, source: str, date: str, segments: list[str]):
    """(report, part files to check, segments archived by an earlier attempt of this run).

    A re-executed run (after a crashed worker) finds some segments archived already: they are
    not processed twice, and the checks re-read their part files. Segments the refinery put
    back to ready/ after a failure are the sensor's again (new run, new run key)."""
    from fluxforge import refinery

    if not segments:
        report = refinery.rebuild(cfg, source, date).to_dict()
        return report, list(report.get("files", [])), []
    held = {r.name: r for r in refinery.list_segments(cfg, "processing", source)}
    report = refinery.process_claimed(cfg, [held[n] for n in segments if n in held]).to_dict()
    archived = {r.name for r in refinery.list_segments(cfg, "archive", source)}
    earlier = [n for n in segments if n not in held and n in archived]
    files = list(report.get("files", []))
    if earlier:
        layer = cfg.storage.etl_output
        files = sorted(
            set(files)
            | set(
                quality.partition_parts(
                    open_storage(layer), Layout.of(layer), TABLES, source, date, earlier
                )
            )
        )
    return report, files, earlier


def build_assets(cfg: Config) -> list[Any]:
    parts = refinery_partitions(cfg)
    owners = list(cfg.dagster.owners)
    raw = dg.AssetSpec(
        RAW_SEGMENTS,
        group_name="raw",
        kinds={"ndjson"},
        owners=owners,
        description="Raw segments sealed by the ingestion daemon (outside Dagster): one NDJSON "
        "envelope per received message, one UTC hour per file (docs/segment-format.md). The "
        "ready_segments_sensor claims them for the refinery.",
    )

    @dg.multi_asset(
        name="refinery",
        specs=[
            dg.AssetSpec(
                t,
                deps=[RAW_SEGMENTS],
                partitions_def=parts,
                group_name="lake",
                kinds={"delta", "parquet"},
                owners=owners,
                description=f"Lake table `{t}`: a Delta table (hive: exchange/symbol/date), one "
                "commit per segment of one (date, source); columns in docs/table-schemas.md",
            )
            for t in TABLES
        ],
        check_specs=table_check_specs(),
        partitions_def=parts,
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        description="Raw segments -> normalized tables (fluxforge.refinery)",
    )
    def refinery(
        context: dg.AssetExecutionContext, config: SegmentBatch, fluxforge: FluxForgeResource
    ):
        ff = fluxforge.load()
        source, date = partition_of(context.partition_key)
        report, files, earlier = _run_refinery(ff, source, date, list(config.segments))
        if earlier:
            context.log.info(f"{len(earlier)} segments were archived by an earlier attempt")
        storage = open_storage(ff.storage.etl_output)
        for table in TABLES:
            meta = _table_metadata(report, table)
            meta["segments_already_processed"] = len(earlier)
            meta.update(delta_metadata(ff, table, date))
            if table == "feed_stats":  # latency / clock offset of the run's feeds, per hour
                keys = quality.parts_by_table(files).get(table, [])
                meta |= feed_stats.summary(quality.read_parts(storage, table, keys))
            yield dg.MaterializeResult(asset_key=table, metadata=meta)
        yield from evaluate(ff, storage, files, report)
        if report.get("held") and not report.get("failed"):
            # per-source order: the batch went back to ready/ behind an unsettled earlier
            # segment (its reason names the next step): the work was not done, say so
            held = report["held"]
            raise dg.Failure(
                description="; ".join(
                    f"{h['source']} held at {h['segment']} ({h['state']}/): {h['reason']}"
                    for h in held[:3]
                ),
                metadata={"held": [h["segment"] for h in held], "deferred": report["deferred"]},
            )
        if report.get("failed"):
            # the refinery retried them with backoff and put them back to ready/ (retried by
            # the sensor; only an operator's writeoff gives one up): reported here
            raise dg.Failure(
                description=f"{len(report['failed'])} segments failed: {report['failed'][:3]}",
                metadata={
                    "failed": [f["segment"] for f in report["failed"]],
                    "deferred": report.get("deferred", []),
                },
            )

    @dg.asset(
        partitions_def=parts,
        deps=list(TABLES),
        group_name="lake",
        kinds={"parquet"},
        owners=owners,
        io_manager_key="lake_io_manager",
        check_specs=[
            dg.AssetCheckSpec(
                "coverage_no_gaps", asset="coverage", description="no gap-ledger rows in the day"
            )
        ],
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        description="Rows per exchange · symbol · channel · UTC hour (+ gaps) of the partition; "
        "expected hours without rows listed with a reason",
    )
    def coverage(context: dg.AssetExecutionContext, fluxforge: FluxForgeResource):
        ff = fluxforge.load()
        source, date = partition_of(context.partition_key)
        table = quality.partition_coverage_with_missing(ff, source, date)
        gaps = int(sum(table.column("gaps").to_pylist())) if table.num_rows else 0
        reasons = [r for r in table.column("reason").to_pylist() if r is not None]
        return dg.MaterializeResult(
            value=table,
            metadata={
                "heatmap": _heatmap(table, f"{source} {date}"),
                "dagster/row_count": table.num_rows,
                "rows": table.num_rows,
                "hours": len(set(table.column("hour").to_pylist())),
                "gaps": gaps,
                "missing_hours": len(reasons),
                **{f"missing_{r}": reasons.count(r) for r in quality.MISSING_REASONS},
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="coverage_no_gaps",
                    passed=gaps == 0,
                    metadata={"gaps": gaps},
                    severity=dg.AssetCheckSeverity.WARN,
                )
            ],
        )

    return [refinery, coverage, raw]


def _heatmap(table: Any, title: str) -> dg.MetadataValue:
    """The coverage heatmap (fluxforge.plots) as an inline PNG in the asset's metadata."""
    import base64

    from fluxforge import plots

    try:
        png = plots.png_bytes(plots.coverage_figure(table, title))
    except plots.PlotError as exc:
        return dg.MetadataValue.text(str(exc))
    data = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![coverage heatmap](data:image/png;base64,{data})")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_assets(load_config()))
