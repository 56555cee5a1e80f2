"""Delta lake tables on a real S3-compatible server (SeaweedFS): commits use conditional writes,
several sources commit to one table at once, and errors injected into the commits themselves
(the log PUTs) lose nothing and publish nothing twice."""

from __future__ import annotations

import threading
from decimal import Decimal

import pyarrow as pa
import pytest

from fluxforge import lake
from fluxforge.config import LayerStorage, PathNames, S3Settings
from fluxforge.storage import Layout, open_storage
from fluxforge.tables import DECIMAL
from tests.reliability.faultproxy import FaultProxy

pytestmark = [pytest.mark.services]

LAYOUT = Layout(PathNames())
DAY = "2024-01-02"


def _storage(bucket: str, endpoint: str, region: str):
    settings = S3Settings(endpoint_url=endpoint, region=region, max_attempts=10)
    return open_storage(LayerStorage(backend="s3", base_dir=bucket, s3=settings))


def _trades(seq0: int, n: int) -> pa.Table:
    return pa.table(
        {
            "ts_event": pa.array(range(seq0, seq0 + n), pa.int64()),
            "ts_recv": pa.array(range(seq0, seq0 + n), pa.int64()),
            "venue_symbol": ["BTC-USD"] * n,
            "trade_id": [str(i) for i in range(seq0, seq0 + n)],
            "price": pa.array(["100.5"] * n).cast(DECIMAL),
            "size": pa.array(["0.25"] * n).cast(DECIMAL),
            "side": ["buy"] * n,
            "seq": pa.array(range(seq0, seq0 + n), pa.int64()),
        }
    )


def _publish_segments(storage, source: str, segments: int, rows: int, errors: list) -> None:
    """One source's segments, each committed with its app transaction, every one twice (a
    retried run) to check that the second commit is a no-op."""
    lk = lake.Lake(storage, LAYOUT)
    for i in range(segments):
        seq0 = i * rows
        staged = lk.stage(
            "trades", _trades(seq0, rows), "coinbase", "BTC-USD", DAY, f"{source}-{i}"
        )
        for _attempt in range(2):
            try:
                lk.commit("trades", [staged], app=(f"fluxforge/{source}", seq0 + rows - 1))
            except Exception as exc:  # reported below: none is expected
                errors.append(f"{source} {i}: {exc}")


def _publish_concurrently(storage, sources: int, segments: int, rows: int) -> list[str]:
    """Sources src0.. publishing their segments at once, one thread each: their errors."""
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_publish_segments, args=(storage, f"src{k}", segments, rows, errors)
        )
        for k in range(sources)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_lake_s3_concurrent_sources_commit_exactly_once(s3_server, s3_env) -> None:
    storage = _storage(
        s3_server.bucket("delta-concurrent"), s3_server.endpoint_url, s3_server.region
    )
    lake.Lake(storage, LAYOUT).ensure("trades")
    assert _publish_concurrently(storage, 3, 5, 20) == []
    data = lake.read_table(storage, "trades")
    assert data.num_rows == 3 * 5 * 20  # nothing lost, nothing published twice
    lk = lake.Lake(storage, LAYOUT)
    assert {lk.transaction_version("trades", f"fluxforge/src{k}") for k in range(3)} == {99}
    assert data.column("price")[0].as_py() == Decimal("100.5")
    log = s3_server.client().list_objects_v2(
        Bucket=storage.bucket, Prefix="processed/trades/_delta_log/"
    )
    assert len(log["Contents"]) >= 15  # one commit per published segment (+ create)


def test_lake_s3_older_table_given_the_checkpoint_interval_once_under_concurrency(
    s3_server, s3_env
) -> None:
    """A table an older FluxForge created (a checkpoint every 100 commits) and three sources
    publishing into it at once: each writer's first commit finds the setting missing, one
    metadata commit lands, the others find it on the re-read log; every row once."""
    from deltalake import DeltaTable

    storage = _storage(s3_server.bucket("delta-config"), s3_server.endpoint_url, s3_server.region)
    DeltaTable.create(
        lake.table_uri(storage, LAYOUT, "trades"),
        schema=lake.table_schema("trades"),
        partition_by=["exchange", "symbol", "date"],
        configuration={"delta.checkpointInterval": "100"},
        storage_options=lake.storage_options(storage),
    )
    assert _publish_concurrently(storage, 3, 3, 10) == []
    assert lake.read_table(storage, "trades").num_rows == 3 * 3 * 10
    handle = lake.Lake(storage, LAYOUT).table("trades")
    assert handle is not None
    assert handle.metadata().configuration == lake.TABLE_CONFIG
    settings = [c for c in handle.history() if c.get("fluxforge.operation") == "table-config"]
    assert len(settings) == 1
    assert handle.version() == 1 + 3 * 3  # 0 the create, 1 the setting, one per segment


def test_lake_s3_errors_during_commits_lose_nothing_publish_once(s3_server, s3_env) -> None:
    """Every other PUT of a log entry fails (500, reset, or executed with its answer lost):
    delta-rs's client retries a 500; Lake.commit re-reads the log after any other error and
    finds a lost answer's commit there (success) or tries a commit that did not land again.
    No error reaches the caller and the table ends with each segment exactly once."""
    bucket = s3_server.bucket("delta-faults")
    counter = {"log_puts": 0}

    def fail_log_puts(method: str, target: str) -> str | None:
        if method == "PUT" and "_delta_log/" in target and ".json" in target:
            counter["log_puts"] += 1
            if counter["log_puts"] % 2 == 0:
                return ("500", "reset", "timeout")[counter["log_puts"] // 2 % 3]
        return None

    with FaultProxy(s3_server.endpoint_url, rule=fail_log_puts, hold_s=0.5) as proxy:
        storage = _storage(bucket, proxy.url, s3_server.region)
        lk = lake.Lake(storage, LAYOUT)
        for i in range(8):
            staged = lk.stage("trades", _trades(i * 10, 10), "coinbase", "BTC-USD", DAY, f"s-{i}")
            assert lk.commit("trades", [staged], app=("fluxforge/s", i * 10 + 9))
    assert proxy.stats.faults["reset"] >= 1 and proxy.stats.faults["timeout"] >= 1
    clean = _storage(bucket, s3_server.endpoint_url, s3_server.region)
    data = lake.read_table(clean, "trades")
    assert sorted(data.column("seq").to_pylist()) == list(range(80))  # each row once
    assert lake.Lake(clean, LAYOUT).transaction_version("trades", "fluxforge/s") == 79


def test_lake_s3_table_creation_whose_answer_was_lost_still_gives_the_table(
    s3_server, s3_env
) -> None:
    """The PUT that creates the table's log is executed but its answer is lost: ensure() tries
    again, finds the table and returns it (version 0, nothing created twice)."""
    bucket = s3_server.bucket("delta-create-lost")
    held: list[str] = []

    def hold_first_log_put(method: str, target: str) -> str | None:
        if method == "PUT" and "_delta_log/" in target and not held:
            held.append(target)
            return "timeout"
        return None

    with FaultProxy(s3_server.endpoint_url, rule=hold_first_log_put, hold_s=0.5) as proxy:
        handle = lake.Lake(_storage(bucket, proxy.url, s3_server.region), LAYOUT).ensure("trades")
    assert held  # the fault was injected
    assert handle.version() == 0
    log = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="processed/trades/_delta_log/")
    assert [o["Key"].rsplit("/", 1)[-1] for o in log["Contents"]] == ["00000000000000000000.json"]
