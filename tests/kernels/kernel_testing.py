"""Shared test base: comparison against the tolerance table, backends, random inputs.

Every op's test class derives from a base that is parametrised by BACKEND:
  "xla"    the XLA reference, checked against a float64 numpy oracle;
  "pallas" the Pallas kernels in interpret mode, checked against the XLA reference.
Interpret mode initialises every output buffer with NaN (and conftest turns on
jax_pallas_poison_buffers), so an element a kernel never writes fails `assert_close`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels_pallas import common

BACKENDS = ("xla", "pallas")


def impl_kwargs(backend: str) -> dict:
    if backend == "pallas":
        return dict(implementation="pallas", interpret=True)
    return dict(implementation="xla")


def assert_close(actual, expected, dtype, *, grad: bool = False, what: str = ""):
    """|actual - expected| <= tol + tol * |expected| elementwise, tol from common.TOLERANCES.
    NaN in `actual` always fails; infinities must sit at the same places with the same sign."""
    tol = common.tolerance(dtype, grad=grad)
    actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert not np.isnan(actual).any(), f"{what}: NaN (unwritten or invalid element) in the output"
    inf_a, inf_e = np.isinf(actual), np.isinf(expected)
    assert (inf_a == inf_e).all() and (actual[inf_a] == expected[inf_e]).all(), (
        f"{what}: infinities differ"
    )
    finite = ~inf_e
    err = np.abs(actual[finite] - expected[finite])
    bound = tol + tol * np.abs(expected[finite])
    worst = np.argmax(err - bound) if err.size else 0
    assert (err <= bound).all(), (
        f"{what}: max excess {float((err - bound)[worst]):.3g} "
        f"(err {float(err[worst]):.3g}, tol {tol}, "
        f"dtype {jnp.dtype(dtype)})"
    )


def normal(rng: np.random.Generator, shape, dtype, scale: float = 1.0):
    return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32).astype(dtype)


def loss_weights(rng: np.random.Generator, shape):
    """A fixed random cotangent for gradient tests (so no gradient component vanishes)."""
    return jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[2:])), jnp.float32)


def weighted_sum(out, weights):
    return jnp.sum(out.astype(jnp.float32) * weights)


def grads(fn, args, argnums, weights):
    return jax.jit(jax.grad(lambda *a: weighted_sum(fn(*a), weights), argnums=argnums))(*args)
