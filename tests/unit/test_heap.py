"""fluxforge.heap: after keep_freed_memory, a freed block serves the next allocation (no new
page faults), where glibc's defaults map fresh pages again; above glibc's mmap threshold
ceiling (32 MiB) too."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# a fresh interpreter: allocate and touch a block, free it, do it again; page faults of each
_PROBE = """
import json, resource, sys
import numpy as np
from fluxforge.heap import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
mib = int(sys.argv[2])
def faults_of_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(mib << 17, np.int64)  # every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "first": faults_of_block(), "again": faults_of_block()}))
"""


def _probe(mode: str, mib: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, str(mib)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize("mib", [20, 48])  # below and above glibc's mmap threshold ceiling
def test_freed_block_is_reused_only_when_kept(mib: int) -> None:
    kept = _probe("keep", mib)
    default = _probe("default", mib)
    assert kept["applied"] is True
    assert kept["first"] > 100, kept  # the first block is new memory either way
    assert kept["again"] < kept["first"] / 10, kept
    # glibc's defaults hand the block back and map it anew: the probe can tell the difference
    assert default["again"] > default["first"] / 2, default


def test_keep_freed_memory_answers_once() -> None:
    from fluxforge.heap import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
