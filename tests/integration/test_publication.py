"""Publication to the Delta lake: a crash between table commits is finished by the next run
without doubling anything, a copy of a published segment under another name is refused (held
in failed/ with the reason), and a blocking check publishes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fluxforge import lake, refinery, schemas
from fluxforge.refinery import process_ready
from fluxforge.storage import LocalStorage
from fluxforge.tables import REFINERY_TABLES
from tests.reliability.conftest import load, make_synthetic_segments, ready_files


def _counts(root: Path) -> dict[str, int]:
    storage = LocalStorage(root)
    return {t: lake.read_table(storage, t).num_rows for t in REFINERY_TABLES}


@pytest.fixture
def two_lakes(tmp_path: Path):
    make_synthetic_segments(tmp_path / "input", messages=1500, max_bytes=60_000)
    roots = []
    for name in ("clean", "test"):
        shutil.copytree(tmp_path / "input" / "raw", tmp_path / name / "raw")
        roots.append(tmp_path / name)
    clean, test = roots
    assert process_ready(load({"storage": {"base_dir": str(clean)}})).failed == []
    return clean, test, load({"storage": {"base_dir": str(test)}})


def test_crash_between_table_commits_next_run_completes_once(two_lakes, monkeypatch) -> None:
    clean, test, cfg = two_lakes
    real_commit = lake.Lake.commit
    calls = {"n": 0}

    def crash_on_third(self, table, staged, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("simulated crash after two tables were committed")
        return real_commit(self, table, staged, **kw)

    monkeypatch.setattr(lake.Lake, "commit", crash_on_third)
    monkeypatch.setattr(refinery, "RETRY_WAITS_S", ())  # no retry inside the run: a crash
    first = process_ready(cfg)
    assert first.failed and "simulated crash" in first.failed[0]["error"]
    monkeypatch.setattr(lake.Lake, "commit", real_commit)
    # some tables hold the first segment, the rest not yet; the next run finishes the job
    again = process_ready(cfg)
    assert again.failed == []
    assert _counts(test) == _counts(clean)
    clean_keys = {t: lake.list_parts(LocalStorage(clean), t) for t in REFINERY_TABLES}
    assert {t: lake.list_parts(LocalStorage(test), t) for t in REFINERY_TABLES} == clean_keys


def test_tables_of_an_older_fluxforge_get_the_checkpoint_interval_once(two_lakes) -> None:
    """A lake whose tables an older FluxForge created (a Delta checkpoint every 100 commits):
    the refinery's first commit to each table gives it ``TABLE_CONFIG`` in one commit of its
    own, and publishes the same rows and files as into a new lake; later runs change nothing."""
    from deltalake import DeltaTable

    clean, test, cfg = two_lakes
    storage = LocalStorage(test)
    for table in REFINERY_TABLES:
        DeltaTable.create(
            lake.Lake(storage).uri(table),
            schema=lake.table_schema(table),
            partition_by=["exchange", "symbol", "date"],
            configuration={"delta.checkpointInterval": "100"},
        )
    for _ in range(2):  # the second run finds everything published
        assert process_ready(cfg).failed == []
        assert _counts(test) == _counts(clean)
        for table in REFINERY_TABLES:
            handle = lake.Lake(storage).table(table)
            assert handle is not None
            assert handle.metadata().configuration == lake.TABLE_CONFIG
            done = [c for c in handle.history() if c.get("fluxforge.operation") == "table-config"]
            assert len(done) == 1, table
    clean_keys = {t: lake.list_parts(LocalStorage(clean), t) for t in REFINERY_TABLES}
    assert {t: lake.list_parts(storage, t) for t in REFINERY_TABLES} == clean_keys


def test_copy_of_published_segment_under_new_name_is_refused(two_lakes) -> None:
    clean, _test, _cfg = two_lakes
    cfg = load({"storage": {"base_dir": str(clean)}})
    before = _counts(clean)
    archived = ready_files(clean, "syn", "archive")
    copy = archived[0].name.rsplit("_", 1)[0] + "_99999.ndjson"
    (clean / "raw/ready/syn").mkdir(parents=True, exist_ok=True)
    shutil.copy(archived[0], clean / "raw/ready/syn" / copy)
    report = process_ready(cfg)
    assert [f["segment"] for f in report.failed] == [f"syn/{copy}"]
    assert "already published" in report.failed[0]["error"]
    assert report.failed[0]["moved_to"] == "failed"  # held at once, with the reason
    reason = (clean / "raw/failed/syn" / f"{copy}.reason.txt").read_text()
    assert "seqs" in reason and "overlap" in reason
    assert _counts(clean) == before  # nothing published twice


def test_blocking_check_publishes_nothing(two_lakes, monkeypatch) -> None:
    _clean, test, cfg = two_lakes

    def bad_accounting(ref, dem) -> None:
        raise schemas.SchemaViolation(f"{ref}: line accounting: simulated defect")

    monkeypatch.setattr(refinery, "_check_line_accounting", bad_accounting)
    report = process_ready(cfg)
    assert report.failed and "line accounting" in report.failed[0]["error"]
    assert all(n == 0 for n in _counts(test).values())
    assert ready_files(test, "syn")  # back in ready/ for a retry, nothing lost


def test_duplicated_trade_rows_block_publication_empty_ids_do_not() -> None:
    import pyarrow as pa

    from fluxforge.refinery import SegmentRef, _check_no_duplicated_trades

    ref = SegmentRef("s", "segment_20240102T03_00001.ndjson")
    twice = pa.table({"seq": [5, 5, 6], "trade_id": ["a", "a", "b"]})
    with pytest.raises(schemas.SchemaViolation, match="seq 5 trade 'a'"):
        _check_no_duplicated_trades(ref, [(twice, "coinbase", "BTC-USD", "2024-01-02")])
    # Kraken v1 trades carry no id: several on one line are not duplicates
    no_ids = pa.table({"seq": [7, 7, 7], "trade_id": ["", "", ""]})
    _check_no_duplicated_trades(ref, [(no_ids, "kraken", "BTC-USD", "2024-01-02")])
    # a part of many rows in receive order or not: only a repeated (seq, id) pair blocks,
    # wherever it sits; one line with several ids, one id on several lines, null ids pass
    seqs = [*range(1000), 500, 500, 900]
    ids = [*(f"t{i}" for i in range(1000)), "x", None, "t7"]
    fine = pa.table({"seq": seqs, "trade_id": ids})
    order = list(reversed(range(len(seqs))))
    for part in (fine, fine.take(order)):
        _check_no_duplicated_trades(ref, [(part, "coinbase", "BTC-USD", "2024-01-02")])
    for where in (0, 999):
        bad = pa.table({"seq": [*seqs, where], "trade_id": [*ids, f"t{where}"]})
        for part in (bad, bad.take([len(seqs), *order])):
            with pytest.raises(schemas.SchemaViolation, match=f"seq {where} trade 't{where}'"):
                _check_no_duplicated_trades(ref, [(part, "coinbase", "BTC-USD", "2024-01-02")])
