"""The refinery job (all lake assets of one partition) and the executor.

In-process execution: the refinery step is one process-bound call, and a separate process
per step only adds seconds of start-up to the ready -> visible latency."""

from __future__ import annotations

import dagster as dg

from fluxforge.config import Config, load_config
from fluxforge_dagster.defs.partitions import refinery_partitions

REFINERY_JOB = "refinery_job"
COVERAGE_JOB = "coverage_job"


def build_refinery_job(cfg: Config) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        REFINERY_JOB,
        selection=dg.AssetSelection.groups("lake"),
        partitions_def=refinery_partitions(cfg),
        executor_def=dg.in_process_executor,
        description="Refine a batch of raw segments (or rebuild a partition) into the lake",
    )


def build_coverage_job(cfg: Config) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        COVERAGE_JOB,
        selection=dg.AssetSelection.assets("coverage"),
        partitions_def=refinery_partitions(cfg),
        executor_def=dg.in_process_executor,
        description="Recompute the coverage view of a partition from the lake",
    )


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    return dg.Definitions(
        jobs=[build_refinery_job(cfg), build_coverage_job(cfg)],
        executor=dg.in_process_executor,
    )
