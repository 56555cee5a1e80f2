"""Daily (UTC) × source partitions. Symbol and channel stay inside a partition (hive dirs)."""

from __future__ import annotations

import dagster as dg

from fluxforge.config import Config


def refinery_partitions(cfg: Config) -> dg.MultiPartitionsDefinition:
    # every configured source is a partition, enabled or not, so a replay or a disabled
    # source's archived segments can still be backfilled
    sources = [s.name for s in cfg.sources] or ["synthetic"]
    return dg.MultiPartitionsDefinition(
        {
            # end_offset=1: today's partition exists while today's segments arrive
            "date": dg.DailyPartitionsDefinition(
                start_date=cfg.dagster.partitions_start_date, timezone="UTC", end_offset=1
            ),
            "source": dg.StaticPartitionsDefinition(sources),
        }
    )


def partition_of(partition_key: str) -> tuple[str, str]:
    """(source, date) of a partition key ("date|source": dimensions sorted by name)."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        keys = partition_key.keys_by_dimension
        return keys["source"], keys["date"]
    date, _, source = partition_key.partition("|")
    return source, date


def partition_key(source: str, date: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date, "source": source})
