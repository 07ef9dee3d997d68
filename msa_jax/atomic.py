"""Writing a folder atomically, with concurrent and interrupted writers in mind.

A write of `dest` holds its lock (msa_jax.locks) throughout and goes through hidden siblings:

    .<name>.tmp-XXXXXXXX   being written (a killed writer leaves it: removed by the next one)
    .<name>.swap-new       complete, about to replace dest
    .<name>.swap-old       the previous dest, removed once the new one is in place

so that a kill at any point leaves either the old or the new folder recoverable: `recover(dest)`
(run by every write, and by readers such as `load_bank` when dest is missing) finishes an
interrupted swap or puts the old folder back, and removes temporary folders of killed runs. It
runs only under the lock, so it never touches a live writer's folders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Iterator

from msa_jax.locks import hold

_NEW, _OLD = "swap-new", "swap-old"
# Test seam: at the swap (old dest moved aside, new one not yet in place) create this file and
# wait, so that a test can kill the writer there.
PAUSE_AT_SWAP = "MSA_JAX_TEST_PAUSE_AT_SWAP"
_log = logging.getLogger(__name__)


def sibling(dest: str, tag: str) -> str:
    dest = os.path.abspath(dest)
    return os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{tag}")


def _temporaries(dest: str) -> list[str]:
    parent, base = os.path.split(os.path.abspath(dest))
    pattern = re.compile(rf"\.{re.escape(base)}\.tmp-[a-z0-9_]{{8}}")  # tempfile.mkdtemp names
    return [os.path.join(parent, n) for n in sorted(os.listdir(parent)) if pattern.fullmatch(n)]


def _remove(path: str):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def leftovers(dest: str) -> list[str]:
    """Hidden folders an interrupted write of `dest` left behind."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        return []
    swap = [p for p in (sibling(dest, _NEW), sibling(dest, _OLD)) if os.path.lexists(p)]
    return swap + _temporaries(dest)


def recover(dest: str) -> list[str]:
    """Repair what interrupted writes of `dest` left (the caller holds dest's lock); returns a
    line per repair. A complete new folder replaces dest (the writer had finished writing it);
    else a moved-aside old folder goes back; temporary folders are removed."""
    dest = os.path.abspath(dest)
    new, old = sibling(dest, _NEW), sibling(dest, _OLD)
    done = []
    if os.path.isdir(new):
        if os.path.lexists(dest):
            if os.path.lexists(old):
                _remove(old)
            os.rename(dest, old)
        os.rename(new, dest)
        done.append(f"{dest}: finished an interrupted replacement (from {new})")
    elif os.path.lexists(old) and not os.path.lexists(dest):
        os.rename(old, dest)
        done.append(f"{dest}: put back the previous version (from {old})")
    for path in ([old] if os.path.lexists(old) else []) + _temporaries(dest):
        _remove(path)
        done.append(f"{dest}: removed {path}, left by an interrupted write")
    for line in done:
        _log.warning(line)
    return done


def recover_for_reading(dest: str, what: str = "folder"):
    """Before reading a missing `dest`: recover an interrupted replacement if one left it
    missing, or raise FileNotFoundError naming the hidden folders and how to recover."""
    dest = os.path.abspath(dest)
    if os.path.lexists(dest):
        return
    found = leftovers(dest)
    if not any(p.endswith((_NEW, _OLD)) for p in found):
        return
    try:
        with hold(dest):
            recover(dest)
    except OSError as e:  # PathLocked: a live writer is mid-swap; or a read-only folder
        raise FileNotFoundError(
            f"{dest}: no {what} here; an interrupted replacement left {', '.join(found)} and it "
            f"could not be recovered now ({e}); rename the complete one to {dest}") from None


def _check_absent(dest: str, overwrite: bool, flag: str):
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(f"{dest} exists (pass {flag} to replace it)")


@contextlib.contextmanager
def claim(dest: str, overwrite: bool = False, flag: str = "overwrite=True") -> Iterator[str]:
    """Hold `dest`'s lock for the body, after recovering interrupted writes and checking that
    `dest` may be written: call it before the compute, so that a locked, existing (without
    `overwrite`), read-only or impossible destination fails fast. Yields the absolute path."""
    dest = os.path.abspath(dest)
    with hold(dest):
        recover(dest)
        _check_absent(dest, overwrite, flag)
        yield dest


def _pause_at_swap():
    ready = os.environ.get(PAUSE_AT_SWAP)
    if ready:
        with open(ready, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)


@contextlib.contextmanager
def atomic_directory(dest: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `dest`; on success it is renamed to `dest`.

    If the body raises, the temporary directory is removed and `dest` is untouched: a failed
    write leaves nothing half-written. With `overwrite`, an existing `dest` is replaced only
    after the new one is complete; without, `dest` is checked again just before the rename, so
    a folder that appeared meanwhile is never replaced. The lock is held throughout (nested in
    a `claim` of the same path by the same thread).
    """
    with claim(dest, overwrite) as dest:
        new, old = sibling(dest, _NEW), sibling(dest, _OLD)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-",
                               dir=os.path.dirname(dest))
        try:
            yield tmp
            _check_absent(dest, overwrite, "overwrite=True")
            os.rename(tmp, new)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.lexists(dest):
            os.rename(dest, old)
            _pause_at_swap()
        os.rename(new, dest)
        if os.path.lexists(old):
            _remove(old)
