"""The routing scan on an int8 tier (values q, scales s: the tier is q * s, per chunk and KV head)
against the same scan on the dequantised float32 tier, XLA and Pallas (interpret); bad inputs
named; the int8 kernel lowers for CUDA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels_pallas as kp
from kernels_pallas import common
from tests.tolerances import F32_REASSOC

# (similarity, head_reduce, query_reduce, chunk_reduce, B, T, N, K, H, C, block_chunks): ragged and
# whole tiles, GQA groups 1/2/4, every reduction, the fused row-sum (2-16 rows), the GEMV (one row)
# and the GEMM (> 16 rows) forms of the XLA scan
CASES = [
    ("dot", "mean", "max", "max", 2, 5, 4, 2, 64, 150, 64),
    ("cosine", "max", "mean", "mean", 1, 1, 8, 2, 32, 100, None),
    ("dot", "max", "max", "mean", 3, 7, 4, 4, 64, 70, 32),
    ("cosine", "mean", "mean", "max", 2, 4, 2, 1, 32, 40, 16),
]


def _inputs(case, seed=0):
    _, _, _, _, b, t, n, k, h, c, _ = case
    rng = np.random.default_rng(seed)
    qr = rng.standard_normal((b, t, n, h)).astype(np.float32)
    mask = rng.random((b, t)) < 0.7
    mask[:, 0] = True
    q = rng.integers(-127, 128, (c, k, h)).astype(np.int8)
    scale = rng.uniform(1e-3, 5e-2, (c, k)).astype(np.float32)
    scale[3, 0] = 0.0  # an all-zero head (quantize_int8 of a zero row)
    chunk_doc = np.sort(rng.integers(-1, 12, c)).astype(np.int32)  # -1: empty slots
    return qr, mask, q, scale, chunk_doc


def _options(case):
    sim, head, query, chunk, *_, h, _, bc = case
    return dict(num_docs=12, similarity=sim, scale=h ** -0.5, head_reduce=head,
                query_reduce=query, chunk_reduce=chunk, block_chunks=bc)


IMPLEMENTATIONS = {"xla": dict(implementation="xla"),
                   "pallas": dict(implementation="pallas", interpret=True)}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "_".join(map(str, c[:4])))
def test_int8_scan_matches_the_float_scan_of_the_dequantised_tier(case, impl):
    """Same function, another input form: the int8 tile is dequantised (one exact float32
    product per value, as numpy does below) inside the scan, so only the summation order can
    differ: F32_REASSOC."""
    qr, mask, q, scale, chunk_doc = _inputs(case)
    dequantised = q.astype(np.float32) * scale[:, :, None]  # the numpy oracle of the tier
    kw = dict(_options(case), **IMPLEMENTATIONS[impl])
    got = kp.routing_doc_scores(qr, mask, q, chunk_doc, kr_scale=scale, **kw)
    want = kp.routing_doc_scores(qr, mask, dequantised, chunk_doc, **kw)
    assert got.dtype == jnp.float32 and got.shape == want.shape
    assert np.isfinite(np.asarray(want)).any()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **F32_REASSOC)


def test_int8_inputs_are_checked():
    case = CASES[0]
    qr, mask, q, scale, chunk_doc = _inputs(case)
    kw = dict(_options(case), implementation="xla")
    with pytest.raises(ValueError, match="kr must have dtype"):  # int8 without its scales
        kp.routing_doc_scores(qr, mask, q, chunk_doc, **kw)
    with pytest.raises(ValueError, match=r"kr_scale must have shape \[150, 2\]"):
        kp.routing_doc_scores(qr, mask, q, chunk_doc, kr_scale=scale[:-1], **kw)
    with pytest.raises(ValueError, match="kr_scale must have dtype"):
        kp.routing_doc_scores(qr, mask, q, chunk_doc, kr_scale=scale.astype(np.float16), **kw)
    with pytest.raises(ValueError, match="kr must have dtype"):  # scales with a float tier
        kp.routing_doc_scores(qr, mask, q.astype(np.float32), chunk_doc, kr_scale=scale, **kw)


@pytest.mark.parametrize("chunks", [4000, 4096])
def test_int8_routing_scan_lowers_for_cuda(chunks):
    """MSA-4B head sizes (N 32, K 8, H 128); 4000 chunks: a ragged last tile (masked loads of the
    tier and of its scales)."""
    def fn(qr, mask, kr, doc, scale):
        return kp.routing_doc_scores(qr, mask, kr, doc, num_docs=64, similarity="cosine",
                                     kr_scale=scale, implementation="pallas")

    spec = jax.ShapeDtypeStruct
    text = common.lower_for_cuda(fn, spec((1, 32, 32, 128), jnp.bfloat16),
                                 spec((1, 32), jnp.bool_), spec((chunks, 8, 128), jnp.int8),
                                 spec((chunks,), jnp.int32), spec((chunks, 8), jnp.float32))
    assert common.count_triton_calls(text) == 1
