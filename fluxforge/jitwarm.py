"""Compile every numba kernel before the first segment (``fluxforge compile``).

numba compiles a kernel at its first call and keeps the machine code in its on-disk cache
(``fluxforge.jitcache``). The refinery's kernels take about 1.5 minutes of CPU to compile on
2 cores, and the compiler's memory lifts the process's peak RSS to about 1.6 GB, against
under 0.8 GB for refining a 100 MB segment. A process that starts with an empty cache (a
container's ``/tmp``, the pod or task of each run under the Kubernetes or ECS run launcher)
pays both on its first segment.

``warm`` refines a small bundled segment in a throwaway lake, through the same path as
``fluxforge process``, so every kernel the refinery calls is compiled for the argument types
it is called with and cached. The segment (``jitwarm.ndjson``) holds every documented wire
shape of every venue twice (``tests/fixtures/doc_shapes.py`` generates it, and a test checks
that the file is what it generates). The container image runs ``fluxforge compile`` when it
is built (infra/Dockerfile).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fluxforge.config import Config, config_from_dict
from fluxforge.storage import Layout, open_storage

WARMUP = Path(__file__).with_name("jitwarm.ndjson")
SEGMENT = "segment_20231114T22_00001.ndjson"  # the UTC hour of the bundled lines
SOURCE = "jitwarm"


@dataclass(frozen=True)
class WarmReport:
    cache_dir: Path
    seconds: float
    files_before: int
    files_after: int

    @property
    def compiled(self) -> bool:
        """Whether anything was missing from the cache (and is now in it)."""
        return self.files_after != self.files_before


def cache_files(cache_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of numba's cache directory: relative path -> (size, mtime in ns)."""
    if not cache_dir.is_dir():
        return {}
    out = {}
    for path in cache_dir.rglob("*"):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(cache_dir))] = (st.st_size, st.st_mtime_ns)
    return out


def warm() -> WarmReport:
    """Refine the bundled segment in a temporary lake: every kernel compiled and cached."""
    cache_dir = Path(os.environ["NUMBA_CACHE_DIR"])  # set by jitcache.configure at import
    before = len(cache_files(cache_dir))
    t0 = time.perf_counter()
    # the bundled shapes break chains and checksums on purpose (every rule's branch is taken):
    # the books' warnings about a throwaway lake would only alarm
    quiet = logging.getLogger("fluxforge")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _refine_bundled()
    finally:
        quiet.setLevel(level)
    seconds = time.perf_counter() - t0
    return WarmReport(cache_dir, seconds, before, len(cache_files(cache_dir)))


def ready_in_local_lake(root: Path, source: str, name: str, data: bytes) -> Config:
    """The config of a lake of local files under `root` whose ready segments hold `data` as
    segment `name` of `source`: what ``process_ready`` then refines (the warm-up here, the
    refinery benchmark's runs)."""
    storage = {"backend": "local", "base_dir": str(root / "data")}
    cfg = config_from_dict({"storage": storage}, origin="<local lake>", environ={})
    layer = cfg.storage.etl_input
    open_storage(layer).write_bytes(Layout.of(layer).segment("ready", source, name), data)
    return cfg


def _refine_bundled() -> None:
    from fluxforge.refinery import process_ready

    with tempfile.TemporaryDirectory(prefix="fluxforge-jitwarm-") as tmp:
        cfg = ready_in_local_lake(Path(tmp), SOURCE, SEGMENT, WARMUP.read_bytes())
        report = process_ready(cfg)
        if report.failed or not report.segments:
            raise RuntimeError(f"the warm-up segment did not refine: {report.failed}")
