"""One process per role and store: exclusive locks on lock files.

``exclusive(path, role)`` takes an ``fcntl.flock`` on `path` without waiting: a second process
asking for the same lock gets ``LockHeld`` at once, whose message names the holder (pid, host,
since when) read from the file, and touches nothing. The kernel drops the lock when its holder
dies, even by kill -9, so a stale lock file never blocks anyone; the file itself stays (deleting
it would let two processes lock two different files of one name).

The lock files of the roles (one place names them all):

- ingestion daemon, per source and ingestion store: ``daemon_lock_path``;
- ``fluxforge up``, per data directory: ``up_lock_path``;
- hot store writers (``hot load``, ``rotate``, ``history`` loads), per hot store: ``hot_lock_path``;
- the refinery (``process``, ``recover``, ``writeoff``) per ETL input store: ``refinery_lock_path``.

flock is a local-host lock: on an S3 store the lock file lives in a local directory named after
the bucket, which keeps two processes of one host apart (two hosts need one owner per store).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from fluxforge.storage.paths import sanitize_part

LOCAL_LOCK_DIR_ENV = "FLUXFORGE_LOCK_DIR"


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it and the next step."""

    def __init__(self, role: str, path: Path, holder: dict[str, Any]) -> None:
        self.role, self.path, self.holder = role, path, holder
        since = holder.get("since")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since else "?"
        super().__init__(
            f"{role} is already running: pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} since {when} ({holder.get('what') or role}) holds "
            f"{path}; stop it first (one {role} per store at a time)"
        )


# locks this process holds: path -> [fd, depth]. The lock is per process (a role's second
# instance is another process); inside one process it is re-entrant, so a component that
# takes it again (a test simulating a crashed writer, a command calling another) goes on.
_HELD: dict[str, list[int]] = {}
_HELD_LOCK = threading.Lock()


@contextlib.contextmanager
def exclusive(path: str | Path, role: str, what: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of `path` for the block, or raise ``LockHeld`` at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ident = os.path.realpath(path)
    with _HELD_LOCK:
        held = _HELD.get(ident)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield path
        finally:
            _release(ident)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"lock file {path} is a symlink: refused") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise LockHeld(role, path, holder) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, orjson.dumps(info | {"what": what or role}), 0)
    with _HELD_LOCK:
        _HELD[ident] = [fd, 1]
    try:
        yield path
    finally:
        _release(ident)


def _release(ident: str) -> None:
    with _HELD_LOCK:
        held = _HELD[ident]
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[ident]
    fd = held[0]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        data = os.pread(fd, 4096, 0)
        found = orjson.loads(data) if data else {}
        if isinstance(found, dict):
            return found
    return {}


def local_lock_dir() -> Path:
    """Where the locks of remote stores live: ``$FLUXFORGE_LOCK_DIR``, else
    ``$XDG_STATE_HOME/fluxforge/locks`` (``~/.local/state/fluxforge/locks``)."""
    env = os.environ.get(LOCAL_LOCK_DIR_ENV)
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "fluxforge" / "locks"


def _store_dir(storage: Any) -> Path:
    """A local directory for locks about `storage`: its own root when local, else one named
    after the remote store (bucket and prefix) in ``local_lock_dir``."""
    root = storage.local_path("")
    if root is not None:
        return Path(root) / ".fluxforge-locks"
    ident = storage.uri("")
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return local_lock_dir() / f"store-{digest}"


def daemon_lock_path(storage: Any, source: str) -> Path:
    return _store_dir(storage) / f"daemon-{source}.lock"


def refinery_lock_path(storage: Any, source: str | None = None) -> Path:
    """The store's refinery lock (``process``, ``recover``, ``writeoff``), or one source's
    (whoever refines that source now, Dagster runs included)."""
    name = f"refinery-{sanitize_part(source)}.lock" if source else "refinery.lock"
    return _store_dir(storage) / name


def up_lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / ".fluxforge-up.lock"


def hot_lock_path(embedded_dir: Path | None, dsn: str | None) -> Path:
    """The embedded server's lock beside its data dir (initdb wants that dir empty), else one
    per DSN (its redacted form hashed) in ``local_lock_dir``."""
    if embedded_dir is not None:
        return Path(embedded_dir).with_name(Path(embedded_dir).name + ".lock")
    from fluxforge.redact import redact

    digest = hashlib.sha256(redact(dsn or "").encode()).hexdigest()[:16]
    return local_lock_dir() / f"hot-{digest}.lock"
