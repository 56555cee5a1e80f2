"""`fluxforge status`: ready backlog, processing lag, hot-table sizes, last runs, open gaps."""

from __future__ import annotations

import calendar
import logging
import time
from collections import defaultdict
from typing import Any

import orjson

from fluxforge import lake
from fluxforge.config import Config
from fluxforge.redact import redact_exc
from fluxforge.refinery import list_segments
from fluxforge.storage import Layout, open_storage, parked_storage

log = logging.getLogger(__name__)

RAW_STATES = ("ready", "processing", "failed", "archive")


def _segments(cfg: Config) -> dict[str, dict[str, Any]]:
    store = open_storage(cfg.storage.etl_input)
    layout = Layout.of(cfg.storage.etl_input)
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {state: 0 for state in RAW_STATES} | {"ready_bytes": 0, "oldest_ready": None}
    )
    now = time.time()
    for state in RAW_STATES:
        for ref in list_segments(cfg, state):
            row = out[ref.source]
            row[state] += 1
            if state == "ready":
                key = layout.segment("ready", ref.source, ref.name)
                row["ready_bytes"] += store.size(key)
                if row["oldest_ready"] is None:
                    row["oldest_ready"] = ref.name
                    row["backlog_age_s"] = round(now - _hour_start(ref.hour), 1)
    return dict(sorted(out.items()))


def _hour_start(hour: str) -> float:
    return calendar.timegm(time.strptime(hour, "%Y%m%dT%H"))


def _runs(cfg: Config, limit: int) -> list[dict[str, Any]]:
    store = open_storage(cfg.storage.etl_output)
    layout = Layout.of(cfg.storage.etl_output)
    keys = store.list(layout.state("runs"), "*.json")[-limit:]
    runs = []
    for key in reversed(keys):
        try:
            run = orjson.loads(store.read_bytes(key))
        except orjson.JSONDecodeError:
            log.warning("unreadable run record %s", key)
            continue
        runs.append(
            {
                "kind": run.get("kind"),
                "finished_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.get("finished_at", 0))
                ),
                "segments": len(run.get("segments", [])),
                "failed": len(run.get("failed", [])),
                "lines": run.get("lines"),
                "lag_s": run.get("lag_s"),
            }
        )
    return runs


def _gaps(cfg: Config, days: int) -> list[dict[str, Any]]:
    store = open_storage(cfg.storage.etl_output)
    layout = Layout.of(cfg.storage.etl_output)
    dates = sorted({p.date for p in lake.partitions(store, "gap_ledger", layout)})[-days:]
    rows: list[dict[str, Any]] = []
    for date in dates:
        tbl = lake.read_table(store, "gap_ledger", date=date, layout=layout)
        for row in tbl.to_pylist():
            rows.append(
                {
                    k: row.get(k)
                    for k in ("exchange", "symbol", "channel", "cause", "ts_from", "ts_to")
                }
            )
    return rows


def _hot(cfg: Config) -> dict[str, Any] | None:
    from fluxforge.hot import table_sizes
    from fluxforge.pgserver import running_hot_dsn

    try:
        dsn = running_hot_dsn(cfg)
        if dsn is None:
            return None
        return table_sizes(dsn, cfg.lifecycle.hot_intervals)
    except Exception as exc:  # an unreachable server is a status, not a crash
        return {"error": redact_exc(exc)}


def _order(cfg: Config) -> dict[str, Any]:
    """Held sources (per-source order) and stray files in the raw state directories."""
    from fluxforge.refinery import holds, stray_files

    parked: list[str] = []
    if cfg.storage.ingestion.backend == "s3":  # uploads S3 refused, retried by the daemon
        parked = parked_storage(cfg.storage).list(
            Layout.of(cfg.storage.ingestion).raw_sources("ready"), "segment_*", recursive=True
        )
    return {
        "parked_uploads": parked,
        "held": [h.to_dict() for h in holds(cfg).values()],
        "stray_files": [
            k for st in ("ready", "processing", "failed") for k in stray_files(cfg, st)
        ],
    }


def collect(cfg: Config, runs: int = 5, gap_days: int = 2) -> dict[str, Any]:
    """Everything `fluxforge status` shows, as one JSON-able dict."""
    last = _runs(cfg, runs)
    return {
        **_order(cfg),
        "sources": _segments(cfg),
        "last_runs": last,
        "processing_lag_s": last[0]["lag_s"] if last else None,
        "hot_tables": _hot(cfg),
        "open_gaps": _gaps(cfg, gap_days),
    }


def render(status: dict[str, Any]) -> str:
    """A human-readable summary (sizes, durations and times through ``fluxforge.render``)."""
    from fluxforge.render import human_bytes, human_duration, iso

    lines = ["raw segments per source:"]
    for src, row in status["sources"].items():
        oldest = f", oldest {row['oldest_ready']}" if row["oldest_ready"] else ""
        lines.append(
            f"  {src}: ready {row['ready']} ({human_bytes(row['ready_bytes'])}{oldest}), "
            f"processing {row['processing']}, failed {row['failed']}, archived {row['archive']}"
        )
    if not status["sources"]:
        lines.append("  (none)")
    lag = status["processing_lag_s"]
    for hold in status.get("held", []):
        lines.append(
            f"  HELD {hold['source']} at {hold['segment']} ({hold['state']}/): {hold['reason']}"
        )
    for key in status.get("parked_uploads", []):
        lines.append(f"  PARKED upload (S3 refused it, the daemon retries): {key}")
    for key in status.get("stray_files", []):
        lines.append(f"  stray file (not a segment, never processed): {key}")
    lines.append(f"processing lag: {human_duration(lag) if lag is not None else 'no run yet'}")
    lines.append("last runs:")
    for run in status["last_runs"]:
        lines.append(
            f"  {run['finished_at']} {run['kind']}: {run['segments']} segments, "
            f"{run['failed']} failed, {run['lines'] or 0:,} lines, "
            f"lag {human_duration(run['lag_s'])}"
        )
    if not status["last_runs"]:
        lines.append("  (none)")
    hot = status["hot_tables"]
    if hot is None:
        lines.append("hot tables: none (no hot_store.dsn and no embedded server running)")
    elif "error" in hot:
        lines.append(f"hot tables: {hot['error']}")
    else:
        lines.append("hot tables (rows per day):")
        for table, days in hot.items():
            shown = ", ".join(f"{d} {n:,}" for d, n in days.items()) or "empty"
            lines.append(f"  {table}: {shown}")
    lines.append(f"gaps (last days): {len(status['open_gaps'])}")
    for gap in status["open_gaps"][-10:]:
        lines.append(
            f"  {gap['exchange']} {gap['symbol']} {gap['channel']}: {gap['cause']} "
            f"{iso(gap['ts_from'])} -> {iso(gap['ts_to'])}"
        )
    return "\n".join(lines)
