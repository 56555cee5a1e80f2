"""Pure sensor planning: batches, run keys, cursor, orphans, retries, failed-run reports."""

from __future__ import annotations

from dataclasses import dataclass

from fluxforge_dagster.discovery import (
    Cursor,
    commit,
    dump_cursor,
    held_by_failed_runs,
    parse_cursor,
    plan_batches,
)


@dataclass(frozen=True)
class Ref:
    source: str
    name: str


def seg(hour: str, n: int, source: str = "s") -> Ref:
    return Ref(source, f"segment_{hour}_{n:05d}.ndjson")


def test_plan_batches_backlog_split_by_date_and_size():
    ready = [seg("20260101T23", 1), seg("20260101T23", 2), seg("20260101T23", 3)]
    ready += [seg("20260102T00", 4), seg("20260102T00", 5)]
    plan = plan_batches(ready, [], Cursor(), max_per_run=2, sources=["s"])
    assert [(b.date, len(b.names)) for b in plan.batches] == [
        ("2026-01-01", 2),
        ("2026-01-01", 1),
        ("2026-01-02", 2),
    ]
    assert plan.batches[0].run_key == "s:segment_20260101T23_00001..segment_20260101T23_00002"
    assert plan.batches[2].partition == {"date": "2026-01-02", "source": "s"}


def test_commit_claims_failed_dropped_and_cursor_advanced():
    ready = [seg("20260101T00", i) for i in (1, 2, 3)]
    plan = plan_batches(ready, [], Cursor(), max_per_run=5, sources=["s"])
    done = commit(plan, {("s", ready[0].name): True, ("s", ready[1].name): False,
                         ("s", ready[2].name): True})  # fmt: skip
    assert [b.names for b in done.batches] == [(ready[0].name, ready[2].name)]
    assert done.cursor.last == {"s": ready[2].name}
    assert any("claimed by another process" in n for n in done.notes)


def test_plan_batches_orphans_above_cursor_rerequested_with_same_key():
    claimed = [seg("20260101T00", 1), seg("20260101T00", 2)]
    first = commit(
        plan_batches(claimed, [], Cursor(), 5, ["s"]), {("s", r.name): True for r in claimed}
    )
    # the tick's cursor never got committed: the segments sit in processing/ above the old mark
    again = plan_batches([], claimed, Cursor(), 5, ["s"])
    assert [b.run_key for b in again.batches] == [first.batches[0].run_key]
    assert again.batches[0].orphan
    # with the cursor committed, the same processing segments are in flight: nothing to do
    assert plan_batches([], claimed, first.cursor, 5, ["s"]).batches == []


def test_plan_batches_segment_back_in_ready_gets_retry_run_key():
    ref = seg("20260101T00", 1)
    cursor = Cursor({"s": ref.name})
    plan = plan_batches([ref], [], cursor, 5, ["s"])
    assert plan.batches[0].run_key.endswith("#retry1")
    assert plan.cursor.retries == {"s": 1}
    second = plan_batches([ref], [], plan.cursor, 5, ["s"])
    assert second.batches[0].run_key.endswith("#retry2")


def test_plan_batches_unknown_source_noted_and_skipped():
    plan = plan_batches([seg("20260101T00", 1, "other")], [], Cursor(), 5, ["s"])
    assert plan.batches == []
    assert "other" in plan.notes[0]


def test_plan_batches_tick_cap_defers_rest_in_order():
    ready = [seg("20260101T00", i) for i in range(1, 8)]
    plan = plan_batches(ready, [], Cursor(), 2, ["s"], max_batches=2)
    assert [b.names[0] for b in plan.batches] == [ready[0].name, ready[2].name]
    assert plan.deferred == 3


def test_cursor_roundtrip_and_garbage_is_empty():
    c = Cursor({"a": "segment_20260101T00_00001.ndjson"}, {"a": 2})
    assert parse_cursor(dump_cursor(c)) == c
    assert parse_cursor("not json") == Cursor()
    assert parse_cursor(None) == Cursor()


def test_held_by_failed_runs_reports_only_unowned_segments():
    a, b = seg("20260101T00", 1), seg("20260101T00", 2)
    cursor = Cursor({"s": b.name})
    failed = [("s", a.name, b.name)]
    assert held_by_failed_runs([a, b], cursor, failed, []) == [a, b]
    assert held_by_failed_runs([a, b], cursor, failed, [("s", b.name, b.name)]) == [a]
    assert held_by_failed_runs([a, b], Cursor(), failed, []) == []


def test_plan_batches_held_segments_retried_with_counter_then_given_up():
    a, b = seg("20260101T00", 1), seg("20260101T00", 2)
    cursor = Cursor({"s": b.name})
    plan = plan_batches([], [a, b], cursor, 5, ["s"], held=[a, b])
    assert [x.names for x in plan.batches] == [(a.name, b.name)]
    assert plan.batches[0].run_key.endswith("#retry1") and plan.batches[0].orphan
    assert plan.cursor.held == {f"s/{a.name}": 1, f"s/{b.name}": 1}
    spent = Cursor({"s": b.name}, {}, {f"s/{a.name}": 3, f"s/{b.name}": 3})
    done = plan_batches([], [a, b], spent, 5, ["s"], held=[a, b])
    assert done.batches == [] and "after 3 failed runs" in done.notes[0]
    # archived segments drop out of the counters
    assert plan_batches([], [], spent, 5, ["s"]).cursor.held == {}
