"""Host arrays that cost one copy, not two: what `MemoryBank.view()` builds its tiers in.

- `aligned_empty`: a NumPy array whose data starts on a 64-byte boundary. `jax.device_put` on
  the CPU backend aliases such an array instead of copying it (measured with JAX 0.10 and 0.12:
  the array's buffer pointer is the NumPy one; NumPy's own allocations are 16-byte aligned and
  are copied), so a view's padded tier is the only copy of that tier in RAM.
- `release_pages`: tell the kernel that a memory-mapped bank file's pages, already copied into
  the view, can be reclaimed (MADV_PAGEOUT). Clean file pages are dropped (they are re-read from
  the file on a later access); pages changed in this process (copy-on-write) are kept, so
  nothing is lost. Where the kernel does not support it this is a no-op.
- `grow_rows`: lengthen an array's first axis in place where NumPy can (`ndarray.resize`:
  `realloc`, which glibc serves with `mremap` for large blocks, so the rows are not copied and the
  old and new buffers are never both resident). A bank being built thus peaks at about its final
  size, not at twice the size before its last growth. Where the array is referenced elsewhere (a
  view of it, a memory map), it is copied as before: a view never dangles.

A leaf: NumPy only.
"""

from __future__ import annotations

import mmap

import numpy as np

ALIGN = 64  # bytes: XLA's CPU client aliases host buffers aligned to this
MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux >= 5.4; Python's mmap may not name it


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape` whose data is ALIGN-byte aligned."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    return array.ctypes.data % ALIGN == 0


def release_pages(array: np.ndarray) -> bool:
    """Ask the kernel to reclaim the resident pages of the memory map under `array` (a slice of
    an np.memmap). Returns whether the advice was given (False: not a memmap, or unsupported)."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    handle = getattr(base, "_mmap", None)
    if handle is None or not hasattr(handle, "madvise"):
        return False
    try:
        handle.madvise(MADV_PAGEOUT)
    except (OSError, ValueError):
        return False
    return True


def grow_rows(arrays: dict, key, rows: int, fill=0, copy_rows: int | None = None) -> np.ndarray:
    """Make `arrays[key]` `rows` long on its first axis (not shorter), keeping its leading rows
    and filling the new ones with `fill`; in place when NumPy allows it, else a copy of
    max(rows, copy_rows) rows (a copy should leave more room: the next growth copies again).
    Takes the dict, not the array, so that the dict holds the only reference `ndarray.resize`
    accepts."""
    old = arrays[key].shape[0]
    if rows <= old:
        return arrays[key]
    tail = arrays[key].shape[1:]
    try:
        arrays[key].resize((rows,) + tail, refcheck=True)  # new rows zeroed by NumPy
    except ValueError:  # not owning its data, or referenced: copy
        grown = np.zeros((max(rows, copy_rows or 0),) + tail, arrays[key].dtype)
        grown[:old] = arrays[key]
        arrays[key] = grown
    if fill:
        arrays[key][old:] = fill
    return arrays[key]
