"""The refinery assets: one step turns a batch of raw segments (or, in a backfill, a whole
archived (date, source) partition) into the six lake tables, then `coverage` summarizes the
partition. Bodies unpack the context, make one call into `fluxforge`, and return metadata."""

from typing import Any

import dagster as dg
from pydantic import Field

from fluxforge import quality
from fluxforge.config import Config, load_config
from fluxforge.storage import Layout, open_storage
from fluxforge_dagster.defs.checks import TABLES, evaluate, table_check_specs
from fluxforge_dagster.defs.partitions import partition_of, refinery_partitions
from fluxforge_dagster.defs.resources import FluxForgeResource


class SegmentBatch(dg.Config):
    """Set by the sensor. Empty (a backfill or a manual launch) = rebuild the partition from
    its archived raw segments."""

    segments: list[str] = Field(
        default_factory=list, description="segment file names claimed into processing/"
    )


def _table_metadata(report: dict[str, Any], table: str) -> dict[str, Any]:
    gaps = sum(int(b.get("gaps", 0)) for b in report.get("books", []))
    return {
        "rows": int(report.get("rows", {}).get(table, 0)),
        "bytes": int(report.get("bytes", {}).get(table, 0)),
        "segments": int(report.get("segments", 0)),
        "lines": int(report.get("lines", 0)),
        "quarantined": int(report.get("quarantined", 0)),
        "gaps": gaps,
        "lag_s": float(report.get("lag_s") or 0.0),
    }


def _run_refinery(cfg: Config, source: str, date: str, segments: list[str]):
    """(report dict, part files to check). Retried attempts find their segments archived
    already: those are not processed again, and the checks re-read their part files."""
    from fluxforge import refinery

    if not segments:
        report = refinery.rebuild(cfg, source, date).to_dict()
        return report, list(report.get("files", [])), 0
    pending = {r.name: r for r in refinery.list_segments(cfg, "processing", source)}
    mine = [pending[n] for n in segments if n in pending]
    report = refinery.process_claimed(cfg, mine).to_dict() if mine else {}
    done_before = len(segments) - len(mine)
    files = list(report.get("files", []))
    if done_before:
        layer = cfg.storage.etl_output
        files = quality.partition_parts(
            open_storage(layer), Layout.of(layer), TABLES, date, segments
        )
    return report, files, done_before


def build_assets(cfg: Config) -> list[Any]:
    parts = refinery_partitions(cfg)

    @dg.multi_asset(
        name="refinery",
        specs=[
            dg.AssetSpec(
                t,
                partitions_def=parts,
                group_name="lake",
                kinds={"parquet"},
                description=f"Lake table `{t}` (hive: exchange/symbol/date, part per segment)",
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
        report, files, done_before = _run_refinery(ff, source, date, list(config.segments))
        if done_before:
            context.log.info(f"{done_before} segments were processed by an earlier attempt")
        for table in TABLES:
            meta = _table_metadata(report, table)
            meta["segments_already_processed"] = done_before
            yield dg.MaterializeResult(asset_key=table, metadata=meta)
        layer = ff.storage.etl_output
        yield from evaluate(ff, open_storage(layer), files, report)

    @dg.asset(
        partitions_def=parts,
        deps=list(TABLES),
        group_name="lake",
        kinds={"parquet"},
        io_manager_key="lake_io_manager",
        check_specs=[
            dg.AssetCheckSpec(
                "coverage_no_gaps", asset="coverage", description="no gap-ledger rows in the day"
            )
        ],
        backfill_policy=dg.BackfillPolicy.multi_run(1),
        description="Rows per exchange · symbol · channel · UTC hour (+ gaps) of the partition",
    )
    def coverage(context: dg.AssetExecutionContext, fluxforge: FluxForgeResource):
        ff = fluxforge.load()
        source, date = partition_of(context.partition_key)
        table = quality.partition_coverage(ff, source, date)
        gaps = int(sum(table.column("gaps").to_pylist())) if table.num_rows else 0
        return dg.MaterializeResult(
            value=table,
            metadata={
                "rows": table.num_rows,
                "hours": len(set(table.column("hour").to_pylist())),
                "gaps": gaps,
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

    return [refinery, coverage]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_assets(load_config()))
