"""msa_jax/memory/host_arrays.py: aligned host arrays for `view()`, and releasing a mapped bank
file's pages without losing anything."""

import jax
import numpy as np
import pytest

from msa_jax.memory.host_arrays import ALIGN, aligned_empty, is_aligned, release_pages


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
