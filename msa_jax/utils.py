"""Small shared helpers: atomic directory writes, progress bars, dtype names."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import jax.numpy as jnp


@contextlib.contextmanager
def atomic_directory(dest: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `dest`; on success it is renamed to `dest`.

    If the body raises, the temporary directory is removed and `dest` is untouched: a failed
    write leaves nothing half-written. With `overwrite`, an existing `dest` is replaced only
    after the new one is complete.
    """
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not overwrite:
        raise FileExistsError(f"{dest} exists (pass overwrite=True to replace it)")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(dest):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.old-", dir=parent)
        os.rename(dest, os.path.join(old, "x"))
    os.rename(tmp, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str, data: bytes):
    """Write a file via a temporary sibling and rename (readers never see a partial file)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def dtype_of(name) -> jnp.dtype:
    return jnp.dtype(name)


def progress(iterable=None, enabled: bool = True, **kwargs):
    """tqdm with project defaults; off when `enabled` is False or MSA_JAX_NO_PROGRESS is set."""
    from tqdm.auto import tqdm

    kwargs["disable"] = not enabled or bool(os.environ.get("MSA_JAX_NO_PROGRESS"))
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
