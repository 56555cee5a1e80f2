"""Daily (UTC) × source partitions. Symbol and channel stay inside a partition (hive dirs)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import dagster as dg

from fluxforge.config import Config


def start_date(cfg: Config) -> str:
    """The first daily partition: ``dagster.partitions_start_date``, else the first day with
    data when the code location loads (today on an empty deployment). One value per config in
    a process, so the refinery and the SQL models agree."""
    return cfg.dagster.partitions_start_date or _first_data_day(cfg.model_dump_json())


@functools.cache
def _first_data_day(cfg_json: str) -> str:
    from fluxforge.catalog import first_data_day

    first = first_data_day(Config.model_validate_json(cfg_json))
    return (first or datetime.now(UTC).date()).isoformat()


def refinery_partitions(cfg: Config) -> dg.MultiPartitionsDefinition:
    # every configured source is a partition, enabled or not, so a replay or a disabled
    # source's archived segments can still be backfilled
    sources = [s.name for s in cfg.sources] or ["synthetic"]
    return dg.MultiPartitionsDefinition(
        {
            # end_offset=1: today's partition exists while today's segments arrive
            "date": dg.DailyPartitionsDefinition(
                start_date=start_date(cfg), timezone="UTC", end_offset=1
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
