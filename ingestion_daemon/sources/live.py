"""What every live source shares: capped exponential backoff with jitter, and stop-aware waits."""

from __future__ import annotations

import asyncio
import contextlib
import random

from fluxforge.config import Config, SourceConfig


class Backoff:
    """Delay before reconnect attempt n: min(cap, initial * 2**n) scaled by a random factor in
    [0.5, 1] ("equal jitter"), so many daemons do not reconnect in lockstep. Reset after a
    connection that delivered data."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def live_settings(src: SourceConfig, cfg: Config) -> tuple[float, Backoff]:
    """(silence timeout, backoff) from the source options, defaulting to `ingestion:`."""
    icfg = cfg.ingestion
    silence = float(src.option("silence_timeout_s", icfg.silence_timeout_s))
    backoff = Backoff(
        float(src.option("backoff_initial_s", icfg.backoff_initial_s)),
        float(src.option("backoff_max_s", icfg.backoff_max_s)),
    )
    return silence, backoff


async def sleep_or_stop(stop: asyncio.Event, delay: float) -> bool:
    """Sleep `delay` seconds unless stop is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()
