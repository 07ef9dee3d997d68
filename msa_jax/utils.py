"""Small shared helpers: atomic writes, progress bars, dtype names."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile

import jax.numpy as jnp

from msa_jax.atomic import atomic_directory  # noqa: F401  (re-exported: one home for writes)


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


def load_python_file(path: str):
    """The module of a Python file that is not in a package (a recipe in configs/, a benchmark
    script), executed under its file's stem as name."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
