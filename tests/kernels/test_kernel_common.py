"""Shared helpers: dispatch, tolerance table, padding, and the poisoned-output guarantee."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

from kernels_pallas import common
import kernel_testing as kt


def test_tolerance_table():
    assert common.tolerance(jnp.float32) <= 1e-5
    assert common.tolerance(jnp.bfloat16) <= 1e-2
    assert common.tolerance(jnp.bfloat16, grad=True) == 2 * common.tolerance(jnp.bfloat16)
    assert common.tolerance(jnp.float32, grad=True) == 2 * common.tolerance(jnp.float32)


def test_resolve_implementation():
    assert common.resolve_implementation("auto") == (
        "pallas" if jax.default_backend() == "gpu" else "xla"
    )
    assert common.resolve_implementation("pallas") == "pallas"
    with pytest.raises(ValueError, match="implementation must be one of"):
        common.resolve_implementation("triton")


def test_block_size_and_padding():
    assert common.block_size(5, 64) == 16 and common.block_size(100, 64) == 64
    assert common.block_size(40, 64) == 64 and common.next_pow2(48) == 64
    x = common.pad_axis(jnp.ones((2, 3)), 1, 8, value=-1)
    assert x.shape == (2, 8) and float(x[0, -1]) == -1
    with pytest.raises(ValueError, match="power of two"):
        common.block_size(8, 48)


def test_check_array_names_the_argument():
    with pytest.raises(ValueError, match=r"qr must have shape \[2, \?\], got \(3, 4\)"):
        common.check_array("qr", jnp.zeros((3, 4)), (2, None), "float")
    with pytest.raises(ValueError, match="q_time must have dtype int"):
        common.check_array("q_time", jnp.zeros((3,)), (3,), "int")


def _half_written_kernel(x_ref, o_ref):
    @pl.when(pl.program_id(0) == 0)
    def _():
        o_ref[...] = x_ref[...]


def test_unwritten_output_is_poisoned():
    """The guarantee every Pallas comparison relies on: an element a kernel never writes is NaN in
    interpret mode, so assert_close fails on it."""
    x = jnp.ones((32, 16), jnp.float32)
    out = pl.pallas_call(
        _half_written_kernel,
        grid=(2,),
        in_specs=[pl.BlockSpec((16, 16), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((16, 16), lambda i: (i, 0)),
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        interpret=True,
    )(x)
    assert np.isnan(np.asarray(out[16:])).all() and not np.isnan(np.asarray(out[:16])).any()
    with pytest.raises(AssertionError, match="NaN"):
        kt.assert_close(out, np.ones(x.shape), jnp.float32)


def test_assert_close_fails_outside_tolerance():
    with pytest.raises(AssertionError, match="max excess"):
        kt.assert_close(jnp.asarray([1.0 + 3e-5]), np.asarray([1.0]), jnp.float32)
    kt.assert_close(jnp.asarray([1.0 + 1e-5]), np.asarray([1.0]), jnp.float32)
    with pytest.raises(AssertionError, match="infinities"):
        kt.assert_close(jnp.asarray([-np.inf, 1.0]), np.asarray([0.0, 1.0]), jnp.float32)
