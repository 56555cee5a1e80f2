"""numba's on-disk cache, one directory per version of the library's compiled code.

numba checks a cached function against its own source file only. Most kernels inline helpers
from other modules (every scanner inlines ``fluxforge.demux.bytescan``, the decimal rules of
``fluxforge.wire.decimal``, the declarations' packed layout of ``fluxforge.wire.shape``), so
after such a helper changes (a ``git pull``, an edit) a kernel loaded from the cache still
runs the old helper's machine code: wrong results or a crash. The cache is therefore kept in
a directory named by a digest of every module that uses numba and of every library module
they import: a change to any of them starts a fresh cache (one compilation, about a minute on
2 cores).

Where: ``$NUMBA_CACHE_DIR/<digest>`` when the variable is set, else
``fluxforge/__pycache__/numba/<digest>``. Old directories are left for the user to delete.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _modules(root: Path) -> dict[str, Path]:
    """The library's modules by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]  # (the cache itself lives there)
        package = Path(folder).relative_to(root.parent).parts
        for f in files:
            if f.endswith(".py"):
                name = package if f == "__init__.py" else (*package, f[:-3])
                found[".".join(name)] = Path(folder, f)
    return found


# an import statement: "from x.y import a, b" (names in parentheses too) or "import x.y"
_IMPORT = re.compile(
    rb"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n]+)|import[ \t]+([\w.]+))",
    re.M,
)


def _imported(source: bytes) -> set[str]:
    """Every dotted name an import of `source` may denote (``from pkg import x``: pkg.x)."""
    names: set[str] = set()
    for m in _IMPORT.finditer(source):
        if m.group(3):
            names.add(m.group(3).decode())
            continue
        module = m.group(1).decode()
        names.add(module)
        listed = m.group(2) if m.group(2).startswith(b"(") else m.group(2).split(b"#")[0]
        names.update(f"{module}.{n.decode()}" for n in re.findall(rb"\w+", listed))
    return names


# a module that imports numba (one that only names it, in a docstring, holds no kernel)
_USES_NUMBA = re.compile(rb"^[ \t]*(?:from|import)[ \t]+numba\b", re.M)


def _closure(root: Path) -> dict[Path, bytes]:
    modules = _modules(root)
    sources = {path: path.read_bytes() for path in modules.values()}
    todo = [path for path, text in sources.items() if _USES_NUMBA.search(text)]
    seen = set(todo)
    while todo:
        for name in _imported(sources[todo.pop()]):
            dep = modules.get(name)
            if dep is not None and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return {path: sources[path] for path in sorted(seen)}


def compiled_sources(root: Path = ROOT) -> list[Path]:
    """The library's modules that use numba and every library module they import, directly or
    not (a kernel freezes the values of the globals it reads), in a stable order."""
    return list(_closure(root))


def source_digest(root: Path = ROOT) -> str:
    """A digest of the paths and bytes of ``compiled_sources``."""
    h = hashlib.sha256()
    for path, text in _closure(root).items():
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(text)
        h.update(b"\0")
    return h.hexdigest()[:16]


BASE_ENV = "FLUXFORGE_NUMBA_CACHE_BASE"  # the base a parent process chose, for its children


def configure(root: Path = ROOT) -> Path:
    """Point numba's cache at the directory of this version of the compiled code (before any
    compiled function is defined: called when ``fluxforge`` is imported). The environment
    carries the base directory to child processes, which key it by their own digest."""
    base = os.environ.get(BASE_ENV) or os.environ.get("NUMBA_CACHE_DIR")
    base_dir = Path(base) if base else root / "__pycache__" / "numba"
    path = base_dir / source_digest(root)
    os.environ[BASE_ENV] = str(base_dir)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    config = sys.modules.get("numba.core.config")  # numba read the variable at its import
    if config is not None:
        config.CACHE_DIR = str(path)
    return path
