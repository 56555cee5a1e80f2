"""The daemon: sources -> writers, a periodic tick, signals, orderly shutdown.

A small asyncio service (STYLE rule 9): SIGTERM/SIGINT set a stop event; shutdown stops intake
(sources return, or are cancelled after a grace period), then every writer flushes and seals its
active segment; the return value is the exit code. Finite sources (replay) end the daemon when
all sources are done (burst mode); ``max_seconds`` bounds a run for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from fluxforge.config import Config, ConfigError, SourceConfig
from fluxforge.locks import LockHeld
from ingestion_daemon.sources import Source, SourceConfigError, build_source
from ingestion_daemon.writer import SegmentWriter

log = logging.getLogger("ingestion_daemon")

_GRACE_S = 2.0


def select_sources(cfg: Config, names: list[str] | None) -> list[SourceConfig]:
    """Named sources (even if disabled in the file), else every enabled one."""
    if names:
        return [cfg.source(n) for n in names]
    enabled = [s for s in cfg.sources if s.enabled]
    if not enabled:
        raise ConfigError(
            "sources: no enabled source; enable one in the config or pass --source NAME "
            f"(configured: {[s.name for s in cfg.sources]})"
        )
    return enabled


class Daemon:
    def __init__(self, cfg: Config, sources: list[SourceConfig], max_seconds: float | None) -> None:
        self.cfg = cfg
        self.source_cfgs = sources
        self.max_seconds = max_seconds
        self.stop = asyncio.Event()
        self.units: list[tuple[Source, SegmentWriter]] = []
        self.signalled: int | None = None

    def _on_signal(self, signum: int) -> None:
        log.info("received %s: stopping intake, sealing", signal.Signals(signum).name)
        self.signalled = signum
        self.stop.set()

    def _start_units(self) -> None:
        for src_cfg in self.source_cfgs:
            source = build_source(src_cfg, self.cfg)
            writer = SegmentWriter(
                self.cfg, src_cfg.name, default_ex=source.default_ex, live=source.live
            )
            report = writer.open()
            if report.segments:
                log.warning(
                    "%s: recovered %d segment(s) from active/: %d lines kept, %d torn line(s) "
                    "(%d bytes) cut",
                    src_cfg.name,
                    len(report.segments),
                    report.lines,
                    report.torn_lines,
                    report.torn_bytes,
                )
            source.prepare(writer)
            self.units.append((source, writer))
            log.info(
                "%s: %s source started (next seq %d, next segment counter %d)",
                src_cfg.name,
                src_cfg.type,
                writer.next_seq,
                writer.state.next_counter,
            )

    async def _ticker(self) -> None:
        interval = self.cfg.ingestion.flush_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for _, writer in self.units:
                try:
                    writer.tick()
                except OSError:
                    log.exception("%s: flush/rotation failed; retrying next tick", writer.source)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        try:
            self._start_units()
        except (SourceConfigError, ConfigError, ValueError, OSError, LockHeld) as exc:
            log.error("cannot start: %s", exc)
            for _, writer in self.units:
                writer.close()
            return 2
        rc = 0
        tasks = {
            asyncio.create_task(source.run(writer, self.stop), name=source.name): writer
            for source, writer in self.units
        }
        ticker = asyncio.create_task(self._ticker())
        stop_wait = asyncio.create_task(self.stop.wait())
        deadline = None if self.max_seconds is None else time.monotonic() + self.max_seconds
        pending: set[asyncio.Task] = set(tasks)
        while pending and not self.stop.is_set():
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            done, _ = await asyncio.wait(
                pending | {stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                log.info("max-seconds (%.1f s) reached: stopping", self.max_seconds)
                break
            for task in done & pending:
                pending.discard(task)
                if task.exception() is not None:
                    rc = 1
                    log.error("%s: source failed", task.get_name(), exc_info=task.exception())
                else:
                    log.info("%s: source finished (end of input)", task.get_name())
                    tasks[task].seal("end")  # visible to the refinery now, not at shutdown
        self.stop.set()
        stop_wait.cancel()
        if pending:
            _, late = await asyncio.wait(pending, timeout=_GRACE_S)
            for task in late:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    exc = await asyncio.gather(task, return_exceptions=True)
                    if exc and isinstance(exc[0], Exception):
                        rc = 1
                        log.error("%s: source failed", task.get_name(), exc_info=exc[0])
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        for _, writer in self.units:
            try:
                writer.close()
            except OSError:
                rc = 1
                log.exception("%s: could not seal the active segment", writer.source)
        log.info("daemon stopped (exit %d)", rc)
        return rc


def run_daemon(
    cfg: Config, sources: list[str] | None = None, max_seconds: float | None = None
) -> int:
    """Run the ingestion daemon until stopped; returns the process exit code."""
    selected = select_sources(cfg, sources)
    return asyncio.run(Daemon(cfg, selected, max_seconds).run())
