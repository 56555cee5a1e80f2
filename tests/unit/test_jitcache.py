"""numba's cache is keyed by the compiled modules and everything they import: a change to a
helper module (whose code or constants a cached kernel has frozen) starts a fresh cache
directory instead of reusing machine code built from the old helper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluxforge import jitcache


def _package(tmp_path: Path) -> Path:
    root = tmp_path / "pkgx"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "kern.py").write_text(
        "import numba\nfrom pkgx.consts import K\nfrom pkgx.sub import (\n    helper,  # x\n)\n"
    )
    (root / "consts.py").write_text("from pkgx.deep import D\nK = D + 1\n")
    (root / "deep.py").write_text("D = 1\n")
    (root / "sub" / "helper.py").write_text("def f():\n    import pkgx.late\n")
    (root / "late.py").write_text("")
    (root / "other.py").write_text('"""Not compiled by numba."""\nimport json\n')
    return root


def test_compiled_sources_are_the_numba_modules_and_all_they_import(tmp_path: Path) -> None:
    root = _package(tmp_path)
    names = [p.relative_to(root).as_posix() for p in jitcache.compiled_sources(root)]
    assert names == ["consts.py", "deep.py", "kern.py", "late.py", "sub/__init__.py",
                     "sub/helper.py"]  # fmt: skip


def test_digest_changes_with_an_imported_constant_not_with_other_modules(tmp_path: Path) -> None:
    root = _package(tmp_path)
    before = jitcache.source_digest(root)
    (root / "other.py").write_text('"""Not compiled by numba."""\nimport json\nX = 2\n')
    assert jitcache.source_digest(root) == before
    (root / "deep.py").write_text("D = 2\n")  # two imports away from the kernel
    assert jitcache.source_digest(root) != before


def test_configure_points_numba_at_the_digest_and_children_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _package(tmp_path)
    monkeypatch.delenv(jitcache.BASE_ENV, raising=False)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    path = jitcache.configure(root)
    assert path == tmp_path / "cache" / jitcache.source_digest(root)
    assert os.environ["NUMBA_CACHE_DIR"] == str(path)
    assert jitcache.configure(root) == path  # a child process of the same version: kept
    (root / "deep.py").write_text("D = 3\n")
    assert jitcache.configure(root).parent == path.parent != jitcache.configure(root)


def test_importing_fluxforge_sets_the_cache_before_any_kernel(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop(jitcache.BASE_ENV, None)
    code = "import fluxforge.demux, numba; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / jitcache.source_digest())
