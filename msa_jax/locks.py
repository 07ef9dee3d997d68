"""An exclusive, advisory lock per output path, held for a whole run.

`hold(path)` takes `fcntl.flock` on a sibling file `.<name>.lock` (the path itself may not exist
yet). A second holder — another process, or another thread of this one — is refused at once with
`PathLocked`, naming the path and the holder's pid; the same thread may nest `hold` on one path.
The kernel drops the lock when its holder dies (even by SIGKILL), so a killed run never leaves
the path locked. Creating the lock file is also the first write to the path's folder: a missing
or read-only location fails here, before any compute.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Iterator


class PathLocked(OSError):
    """Another process or thread holds the lock on this path."""


_HELD: dict[str, list[int]] = {}  # path -> [thread id, depth], the locks this process holds
_GUARD = threading.Lock()


def lock_file(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


def _unwritable(path: str, folder: str, error: OSError) -> OSError:
    return OSError(error.errno, f"cannot write {path}: its folder {folder} is missing, not a "
                   f"folder or read-only ({error.strerror})")


def _open(path: str) -> int:
    lock = lock_file(path)
    folder = os.path.dirname(lock)
    try:
        os.makedirs(folder, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _unwritable(path, folder, e) from None


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def _acquire(path: str) -> int:
    lock = lock_file(path)
    for _ in range(100):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise PathLocked(f"{path} is in use by another writer (pid {pid}, lock file {lock}): "
                             "wait until it finishes, or use another path") from None
        try:  # a releasing holder unlinks the file: our lock may be on a stale inode
            current = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise PathLocked(f"{path}: could not lock {lock} (it keeps being replaced)")


@contextlib.contextmanager
def hold(path: str) -> Iterator[None]:
    """Hold the lock on `path` for the body (see the module docstring)."""
    path = os.path.abspath(path)
    me = threading.get_ident()
    with _GUARD:
        entry = _HELD.get(path)
        nested = entry is not None and entry[0] == me
        if nested:
            entry[1] += 1
    if nested:
        try:
            yield
        finally:
            with _GUARD:
                entry[1] -= 1
        return
    fd = _acquire(path)
    with _GUARD:
        _HELD[path] = [me, 1]
    try:
        yield
    finally:
        with _GUARD:
            del _HELD[path]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file(path))  # while still locked: see the samestat check above
        os.close(fd)
