"""fluxforge.heap: after keep_freed_memory, a freed block serves the next allocation (no new
page faults), where glibc's defaults map fresh pages again; above glibc's mmap threshold
ceiling (32 MiB) too. ``release`` hands the whole pages of a range back (RSS drops)."""

from __future__ import annotations

import json
import mmap
import platform
import subprocess
import sys

import numpy as np
import pytest

# a fresh interpreter: allocate and touch a block, free it, do it again; page faults of each
_PROBE = """
import ctypes, json, resource, sys
import numpy as np
from fluxforge.heap import keep_freed_memory
ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)  # huge pages allowed (a child inherits the choice)
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
no_thp = ctypes.CDLL(None).prctl(42, 0, 0, 0, 0)  # PR_GET_THP_DISABLE
mib = int(sys.argv[2])
def faults_of_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(mib << 17, np.int64)  # every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "no_thp": no_thp, "first": faults_of_block(),
                  "again": faults_of_block()}))
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
    assert (kept["no_thp"], default["no_thp"]) == (1, 0)  # huge pages: none once kept
    assert kept["first"] > 100, kept  # the first block is new memory either way
    assert kept["again"] < kept["first"] / 10, kept
    # glibc's defaults hand the block back and map it anew: the probe can tell the difference
    assert default["again"] > default["first"] / 2, default


def test_keep_freed_memory_answers_once() -> None:
    from fluxforge.heap import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * mmap.PAGESIZE


@pytest.mark.skipif(platform.system() != "Linux", reason="madvise(MADV_DONTNEED) is Linux's")
def test_release_hands_whole_pages_back_and_keeps_the_edges() -> None:
    from fluxforge.heap import release

    a = np.full(64 << 17, 7, np.int64)  # 64 MiB, every page written
    before = _rss_bytes()
    start, stop = 12_345, a.nbytes - 23_456  # not on page boundaries
    given = release(a, start, stop)
    assert given > a.nbytes - 3 * 65_536  # every whole page inside the range
    assert before - _rss_bytes() > 48 << 20  # the process holds them no more
    assert (a[: start // 8] == 7).all() and (a[stop // 8 + 1 :] == 7).all()  # the edges stay
    assert (a[start // 8 + 1024 : stop // 8 - 1024] == 0).all()  # the rest reads as zeros
    assert release(a, 0, 100) == 0  # no whole page inside: nothing


def test_release_refuses_memory_it_cannot_know_to_be_private() -> None:
    from fluxforge.heap import release

    with pytest.raises(ValueError, match="contiguous and this process's own"):
        release(np.frombuffer(b"x" * 100_000, np.uint8), 0, 100_000)  # a bytes object's
    with pytest.raises(ValueError, match="contiguous"):
        release(np.zeros((1000, 100), np.int64)[:, 1], 0, 8000)
