"""document_attention: XLA reference vs float64 numpy, Pallas (interpret) vs XLA reference,
gradients vs jax.grad of a plain dense masked attention, and the linear cost of block skipping."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import kernels_pallas as kp
from kernels_pallas.document_attention import pallas as doc_pallas
import kernel_oracles as oracles
import kernel_testing as kt

SCENARIOS = ("ragged", "interleaved")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    length: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: object
    block_q: int
    block_k: int


CASES = [
    Case("g2_h64_f32", 2, 50, 4, 2, 64, jnp.float32, 16, 16),
    Case("g8_h128_bf16", 1, 40, 8, 1, 128, jnp.bfloat16, 32, 16),
    Case("g1_h64_bf16", 2, 33, 2, 2, 64, jnp.bfloat16, 16, 32),
    Case("g4_h128_f32", 2, 24, 8, 2, 128, jnp.float32, 16, 16),
]


def segments(rng, batch: int, length: int, scenario: str) -> np.ndarray:
    """ragged: contiguous documents of random length (1 token and up), trailing padding.
    interleaved: an 'active' segment before and after the documents, padding in the middle,
    and (when batch > 1) a row that is all padding."""
    out = np.full((batch, length), -1, np.int32)
    for b in range(batch):
        if scenario == "interleaved" and b == 1:
            continue
        lens = rng.integers(1, max(2, length // 3), size=length)
        bounds = np.cumsum(lens)
        doc = np.searchsorted(bounds, np.arange(length), side="right")  # ragged runs 0, 1, 2, ...
        out[b] = doc
        if scenario == "ragged":
            out[b, length - 3 :] = -1
        else:
            active = 1000 + b
            out[b, :4], out[b, -5:] = active, active
            out[b, length // 2 : length // 2 + 2] = -1
    return out


def make_inputs(case: Case, scenario: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    b, l, h = case.batch, case.length, case.head_dim
    q = kt.normal(rng, (b, l, case.heads, h), case.dtype)
    k = kt.normal(rng, (b, l, case.kv_heads, h), case.dtype)
    v = kt.normal(rng, (b, l, case.kv_heads, h), case.dtype)
    return q, k, v, jnp.asarray(segments(rng, b, l, scenario))


def run(backend: str, case: Case, q, k, v, seg):
    kwargs = kt.impl_kwargs(backend)
    if backend == "pallas":
        kwargs.update(block_q=case.block_q, block_k=case.block_k)
    return kp.document_attention(q, k, v, seg, scale=case.head_dim**-0.5, **kwargs)


class DocumentAttentionTestBase:
    BACKEND: str

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_forward(self, case):
        for scenario in SCENARIOS:
            q, k, v, seg = make_inputs(case, scenario)
            got = run(self.BACKEND, case, q, k, v, seg)
            assert got.shape == q.shape and got.dtype == case.dtype
            if self.BACKEND == "xla":
                visible = oracles.document_visibility(seg)
                want = oracles.np_attention(q, k, v, visible, case.head_dim**-0.5)
            else:
                want = run("xla", case, q, k, v, seg)
            kt.assert_close(got, want, case.dtype, what=f"{case.name}/{scenario}")
            padding = np.asarray(seg) < 0
            assert (np.asarray(got, np.float32)[padding] == 0).all(), "a padding query is not 0"

    @pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=lambda c: c.name)
    def test_gradients(self, case):
        q, k, v, seg = make_inputs(case, "interleaved", seed=1)
        weights = kt.loss_weights(np.random.default_rng(2), q.shape)
        visible = jnp.asarray(oracles.document_visibility(seg))
        scale = case.head_dim**-0.5
        got = kt.grads(lambda *a: run(self.BACKEND, case, *a, seg), (q, k, v), (0, 1, 2), weights)
        want = kt.grads(
            lambda *a: oracles.dense_attention(*a, visible, scale), (q, k, v), (0, 1, 2), weights
        )
        for name, g, w in zip("qkv", got, want):
            assert g.dtype == case.dtype
            kt.assert_close(g, w, case.dtype, grad=True, what=f"{case.name}/d{name}")


class TestDocumentAttentionXla(DocumentAttentionTestBase):
    BACKEND = "xla"

    def test_query_chunks_match_one_pass(self):
        """The reference's chunked paths equal the one-pass path: lax.map over block_q queries
        against every key, and causal blocks (each against the keys up to its end, the last
        block partial)."""
        from kernels_pallas.document_attention import reference

        q, k, v, seg = make_inputs(CASES[0], "interleaved")
        one = reference.document_attention(q, k, v, seg, scale=0.125, causal_block=None)
        chunked = reference.document_attention(q, k, v, seg, scale=0.125, block_q=16,
                                               causal_block=None)
        kt.assert_close(chunked, one, jnp.float32)
        for block in (16, 32):  # 50 tokens: 4 blocks (the last of 2 tokens), 2 blocks
            causal = reference.document_attention(q, k, v, seg, scale=0.125, causal_block=block)
            kt.assert_close(causal, one, jnp.float32, what=f"causal_block={block}")

    @pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=lambda c: c.name)
    def test_causal_blocks_match_numpy(self, case):
        """Causal blocks of 16 (the default's path, at the test's small lengths) against the
        float64 numpy oracle, forward and gradients (the kernel tolerance table)."""
        from kernels_pallas.document_attention import reference

        q, k, v, seg = make_inputs(case, "ragged", seed=5)
        scale = case.head_dim**-0.5
        attend = lambda *a: reference.document_attention(*a, seg, scale=scale,  # noqa: E731
                                                         causal_block=16)
        visible = oracles.document_visibility(seg)
        want = oracles.np_attention(q, k, v, visible, scale)
        kt.assert_close(attend(q, k, v), want, case.dtype, what=f"{case.name}/causal16")
        weights = kt.loss_weights(np.random.default_rng(6), q.shape)
        got = kt.grads(attend, (q, k, v), (0, 1, 2), weights)
        ref = kt.grads(lambda *a: oracles.dense_attention(*a, jnp.asarray(visible), scale),
                       (q, k, v), (0, 1, 2), weights)
        for name, g, w in zip("qkv", got, ref):
            kt.assert_close(g, w, case.dtype, grad=True, what=f"{case.name}/causal16/d{name}")


class TestDocumentAttentionPallas(DocumentAttentionTestBase):
    BACKEND = "pallas"


def banded_segments(rng, batch: int, length: int, band: int, prefix: int) -> np.ndarray:
    """Training-row layout: an active segment (0) on the first `prefix` tokens and again after
    the documents, documents of 1..band-1 tokens between, trailing padding; every segment spans
    fewer than `band` tokens outside the first `prefix`."""
    out = np.full((batch, length), -1, np.int32)
    for b in range(batch):
        out[b, :prefix] = 0
        i, d, end = prefix, 1, length - band
        while i < end:
            n = int(rng.integers(1, band))
            out[b, i:min(i + n, end)] = d
            i, d = i + n, d + 1
        out[b, end:end + band - 1 - b] = 0  # the question row, < band tokens
    return out


@pytest.mark.parametrize("band,prefix", [(16, 5), (32, 16), (16, 0)])
@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=lambda c: c.name)
def test_banded_reference_matches_numpy(case, band, prefix):
    """The block-banded XLA form (a static bound on segment extents) against the float64 numpy
    oracle of the dense definition, forward and gradients (the kernel tolerance table)."""
    rng = np.random.default_rng(3)
    length = 90
    seg = banded_segments(rng, case.batch, length, band, prefix)
    q, k, v = (kt.normal(rng, (case.batch, length, n, case.head_dim), case.dtype)
               for n in (case.heads, case.kv_heads, case.kv_heads))
    seg = jnp.asarray(seg)
    scale = case.head_dim**-0.5
    banded = lambda *a: kp.document_attention(*a, seg, scale=scale, implementation="xla",
                                              band=band, prefix=prefix)
    visible = oracles.document_visibility(seg)
    want = oracles.np_attention(q, k, v, visible, scale)
    kt.assert_close(banded(q, k, v), want, case.dtype, what=f"{case.name}/band{band}")
    weights = kt.loss_weights(np.random.default_rng(4), q.shape)
    got = kt.grads(banded, (q, k, v), (0, 1, 2), weights)
    ref = kt.grads(lambda *a: oracles.dense_attention(*a, jnp.asarray(visible), scale), (q, k, v),
                   (0, 1, 2), weights)
    for name, g, w in zip("qkv", got, ref):
        kt.assert_close(g, w, case.dtype, grad=True, what=f"{case.name}/band{band}/d{name}")


def test_banded_rejects_bad_band():
    q, k, v, seg = make_inputs(CASES[0], "ragged")
    with pytest.raises(ValueError, match="prefix in \\[0, band\\]"):
        kp.document_attention(q, k, v, seg, scale=1.0, band=16, prefix=17)


@pytest.mark.parametrize("doc_len", [64, 40])
def test_cost_is_linear_in_documents(doc_len):
    """Visited (row block, key block) pairs grow linearly with the number of packed documents."""

    def visited(num_docs):
        seg = np.repeat(np.arange(num_docs, dtype=np.int32), doc_len)[None]
        return int(doc_pallas.visited_key_blocks(jnp.asarray(seg), 4, 64, 64)[0])

    counts = [visited(d) for d in (8, 16, 32)]
    assert counts[1] <= 2 * counts[0] + 4 and counts[2] <= 2 * counts[1] + 4, counts
    dense_causal = lambda d: (d * doc_len * 4 // 64) * (d * doc_len // 64 + 1) // 2
    assert counts[2] < dense_causal(32) / 8, (counts, dense_causal(32))


def test_segment_extents_non_contiguous():
    seg = jnp.asarray([[5, 5, 0, 0, 1, -1, 5, 1]], jnp.int32)
    first, last = doc_pallas.segment_extents(seg)
    valid = np.asarray(seg[0]) >= 0
    np.testing.assert_array_equal(np.asarray(first[0])[valid], [0, 0, 2, 2, 4, 0, 4])
    np.testing.assert_array_equal(np.asarray(last[0])[valid], [6, 6, 3, 3, 7, 6, 7])


def test_rejects_bad_arguments():
    q, k, v, seg = make_inputs(CASES[0], "ragged")
    with pytest.raises(ValueError, match="segment_ids must have shape"):
        kp.document_attention(q, k, v, seg[:, :-1], scale=1.0)
    with pytest.raises(ValueError, match="v must have dtype"):
        kp.document_attention(q, k, v.astype(jnp.bfloat16), seg, scale=1.0)
    with pytest.raises(ValueError, match="block_q must be a power of two"):
        kp.document_attention(q, k, v, seg, scale=1.0, block_q=24)
