"""msa_jax/memory/host_arrays.py: aligned host arrays for `view()`, releasing a mapped bank
file's pages without losing anything, and growing a bank's rows without a second copy."""

import jax
import numpy as np
import pytest

from msa_jax.memory.host_arrays import (ALIGN, aligned_empty, grow_rows, is_aligned,
                                       release_pages)


@pytest.mark.parametrize("shape, dtype", [((7, 3, 5), np.float32), ((1,), np.int8),
                                          ((1000, 2), np.float64)])
def test_aligned_empty(shape, dtype):
    a = aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.ctypes.data % ALIGN == 0 and is_aligned(a)
    a[...] = 3
    np.testing.assert_array_equal(np.asarray(jax.device_put(a)), np.full(shape, 3, dtype))


def test_release_keeps_file_pages_and_local_changes(tmp_path):
    path = tmp_path / "rows.bin"
    data = np.arange(1 << 16, dtype=np.float32)
    data.tofile(path)
    mapped = np.memmap(path, np.float32, "c", shape=data.shape)
    mapped[5] = -1.0  # a copy-on-write change: lives only in this process's pages
    assert np.asarray(mapped).sum() != 0  # every page touched
    released = release_pages(mapped[:100])  # a slice: the advice covers its whole map
    assert released in (True, False)  # False only where the kernel lacks MADV_PAGEOUT
    want = data.copy()
    want[5] = -1.0
    np.testing.assert_array_equal(np.asarray(mapped), want)  # re-read, and the change kept
    np.testing.assert_array_equal(np.fromfile(path, np.float32), data)  # the file untouched
    assert release_pages(np.zeros(4)) is False  # not a memory map: nothing to release


def _rows(n):
    return np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3).copy()  # owns its data


def test_grow_rows_in_place_keeps_rows_and_fills():
    arrays = {"t": _rows(5)}
    first = arrays["t"]
    del first  # the dict's reference must be the only one for an in-place resize
    ident = id(arrays["t"])
    grown = grow_rows(arrays, "t", 9, fill=-2)
    assert id(grown) == ident and grown is arrays["t"]  # the same array: resized, not copied
    np.testing.assert_array_equal(grown[:5], _rows(5))
    np.testing.assert_array_equal(grown[5:], np.full((4, 2, 3), -2, np.float32))
    assert grow_rows(arrays, "t", 3) is grown and grown.shape[0] == 9  # never shrinks


def test_grow_rows_copies_when_viewed_or_mapped(tmp_path):
    arrays = {"t": _rows(4)}
    view = arrays["t"][1:3]  # a live view: resizing in place would leave it dangling
    grown = grow_rows(arrays, "t", 6, copy_rows=8)
    np.testing.assert_array_equal(view, _rows(4)[1:3])  # still valid
    assert grown.shape == (8, 2, 3)  # a copy leaves the larger room
    np.testing.assert_array_equal(grown[:4], _rows(4))
    np.testing.assert_array_equal(grown[4:], 0)
    path = tmp_path / "rows.bin"
    _rows(4).tofile(path)
    arrays = {"m": np.memmap(path, np.float32, "c", shape=(4, 2, 3))}
    grown = grow_rows(arrays, "m", 7, fill=1)
    assert not isinstance(grown, np.memmap)
    np.testing.assert_array_equal(grown[:4], _rows(4))
    np.testing.assert_array_equal(grown[4:], 1)
