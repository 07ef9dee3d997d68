"""Routing scan: XLA reference vs float64 numpy, Pallas (interpret) vs XLA reference."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import kernels_pallas as kp
from kernels_pallas.routing import reference
import kernel_oracles as oracles
import kernel_testing as kt


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    tokens: int
    heads: int
    kv_heads: int
    head_dim: int
    chunks: int
    docs: int
    dtype: object
    similarity: str
    head_reduce: str
    query_reduce: str
    chunk_reduce: str
    block_chunks: int
    empty_rows: tuple = ()  # batch rows whose q_mask is all False


# Together the cases cover GQA groups 1/2/4/8, head_dim 64/128 (and a padded 48), both dtypes,
# every reduction, partial tiles (C not a multiple of block_chunks), masked tokens, empty rows,
# and on CPU every XLA form: for head "mean" a fused multiply + row-sum for 2 <= B*T <= 16, else one
# matmul (a GEMV at B*T = 1, a GEMM above 16); for head "max" GEMMs per KV head of up to and
# over 16 rows.
CASES = [
    Case("g2_h64_f32", 2, 5, 4, 2, 64, 150, 20, jnp.float32, "dot", "mean", "max", "max", 64),
    Case("g8_h128_bf16", 1, 1, 8, 1, 128, 64, 7, jnp.bfloat16, "cosine", "max", "mean", "mean", 32),
    Case("g1_h64_bf16", 2, 7, 2, 2, 64, 37, 9, jnp.bfloat16, "dot", "max", "max", "mean", 16, (1,)),
    Case(
        "g4_h128_f32",
        3,
        4,
        8,
        2,
        128,
        100,
        30,
        jnp.float32,
        "cosine",
        "mean",
        "mean",
        "max",
        32,
        (2,),
    ),
    Case("g2_h48_f32", 1, 3, 4, 2, 48, 20, 4, jnp.float32, "dot", "mean", "mean", "max", 16),
    Case("g4_h64_f32_rows18", 2, 9, 8, 2, 64, 90, 12, jnp.float32, "dot", "mean", "max", "max", 32),
    Case("g2_h128_bf16_row1", 1, 1, 4, 2, 128, 50, 6, jnp.bfloat16, "dot", "mean", "max", "max", 16),
    # head max with B*T*G = 24 > 16 rows per KV-head GEMM (the many-row tile rule)
    Case("g4_h64_f32_max_rows24", 2, 3, 8, 2, 64, 70, 10, jnp.float32, "cosine", "max", "max",
         "max", 16),
]


def ragged_chunk_doc(rng, chunks: int, docs: int) -> np.ndarray:
    """Contiguous runs of ragged length, ids in random order, some -1 (empty) slots, unused ids."""
    out = np.full(chunks, -1, np.int32)
    ids = rng.permutation(docs)[: max(1, docs - 2)]  # two documents have no chunk
    c = 0
    for d in ids:
        c += int(rng.integers(0, 2))  # an occasional empty slot
        n = int(rng.integers(1, max(2, 2 * chunks // len(ids))))
        out[c : c + n] = d
        c += n
        if c >= chunks:
            break
    return out


def make_inputs(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    qr = kt.normal(rng, (case.batch, case.tokens, case.heads, case.head_dim), case.dtype)
    kr = kt.normal(rng, (case.chunks, case.kv_heads, case.head_dim), case.dtype)
    q_mask = rng.random((case.batch, case.tokens)) < 0.7
    q_mask[:, 0] = True
    if case.tokens > 1:
        q_mask[:, -1] = False  # always some masked tokens
    for b in case.empty_rows:
        q_mask[b] = False
    chunk_doc = ragged_chunk_doc(rng, case.chunks, case.docs)
    return qr, jnp.asarray(q_mask), kr, jnp.asarray(chunk_doc)


def options(case: Case) -> dict:
    return dict(
        num_docs=case.docs,
        similarity=case.similarity,
        scale=case.head_dim**-0.5,
        head_reduce=case.head_reduce,
        query_reduce=case.query_reduce,
        chunk_reduce=case.chunk_reduce,
    )


class RoutingTestBase:
    BACKEND: str

    def oracle(self, case, inputs):
        if self.BACKEND == "xla":
            return oracles.np_routing_doc_scores(*inputs, **options(case))
        return kp.routing_doc_scores(*inputs, **options(case), implementation="xla")

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_doc_scores(self, case):
        inputs = make_inputs(case)
        got = kp.routing_doc_scores(
            *inputs, **options(case), block_chunks=case.block_chunks, **kt.impl_kwargs(self.BACKEND)
        )
        assert got.shape == (case.batch, case.docs) and got.dtype == jnp.float32
        kt.assert_close(got, self.oracle(case, inputs), case.dtype, what=case.name)
        for b in case.empty_rows:
            assert np.isneginf(np.asarray(got[b])).all()


class TestRoutingXla(RoutingTestBase):
    BACKEND = "xla"

    @pytest.mark.parametrize("case", CASES[:2], ids=lambda c: c.name)
    def test_chunk_scores(self, case):
        qr, q_mask, kr, _ = make_inputs(case)
        opts = options(case)
        got = kp.routing_chunk_scores(
            qr,
            q_mask,
            kr,
            similarity=opts["similarity"],
            scale=opts["scale"],
            head_reduce=opts["head_reduce"],
            query_reduce=opts["query_reduce"],
            block_chunks=16,
        )
        per_chunk = dict(opts, num_docs=case.chunks)
        want = oracles.np_routing_doc_scores(qr, q_mask, kr, np.arange(case.chunks), **per_chunk)
        kt.assert_close(got, want, case.dtype, what=case.name)


class TestRoutingPallas(RoutingTestBase):
    BACKEND = "pallas"


@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_documents(k):
    scores = jnp.asarray(
        [
            [0.5, -np.inf, 2.0, 0.5, -1.0, -np.inf],
            [-np.inf, -np.inf, -np.inf, 3.0, -np.inf, -np.inf],
        ],
        jnp.float32,
    )
    top, ids = kp.topk_documents(scores, k)
    assert top.shape == ids.shape == (2, k) and ids.dtype == jnp.int32
    for b in range(2):
        order = np.argsort(-np.asarray(scores[b]), kind="stable")[:k]
        np.testing.assert_array_equal(np.asarray(top[b]), np.asarray(scores[b])[order])
        finite = np.isfinite(np.asarray(top[b]))
        assert (np.asarray(ids[b])[finite] == order[finite]).all()
        assert not (np.diff(finite.astype(int)) > 0).any(), "a -inf ranked above a finite score"


def test_routing_rejects_bad_arguments():
    qr, q_mask, kr, chunk_doc = make_inputs(CASES[0])
    opts = options(CASES[0])
    with pytest.raises(ValueError, match="kr must have shape"):
        kp.routing_doc_scores(qr, q_mask, kr[..., :32], chunk_doc, **opts)
    with pytest.raises(ValueError, match="q_mask must have shape"):
        kp.routing_doc_scores(qr, q_mask[:1], kr, chunk_doc, **opts)
    with pytest.raises(ValueError, match="chunk_doc must have shape"):
        kp.routing_doc_scores(qr, q_mask, kr, chunk_doc[:-1], **opts)
    with pytest.raises(ValueError, match="head_reduce"):
        kp.routing_doc_scores(qr, q_mask, kr, chunk_doc, **dict(opts, head_reduce="sum"))
    with pytest.raises(ValueError, match="k must be an int"):
        kp.topk_documents(jnp.zeros((1, 4)), 5)


@pytest.mark.parametrize("rows,chunks", [(48, 125_000), (80, 1_250_000), (17, 10**6)])
def test_default_tiles_keep_many_row_scores_in_cache(rows, chunks):
    """Above 16 query rows a tile's [tile, rows] scores stay within SCORE_TILE_BYTES: no whole-tier
    pass (for an 80-row question at K*H = 32 its scores were 2.5x the tier bytes)."""
    bc = reference.default_block_chunks(rows, chunks)
    assert bc & (bc - 1) == 0 and bc < chunks
    assert bc * rows * 4 <= reference.SCORE_TILE_BYTES


@pytest.mark.parametrize("rows,chunks,whole", [(4, 156_250, True), (1, 10**7, True),
                                               (16, 1_250_000, False)])
def test_default_tiles_few_rows(rows, chunks, whole):
    """Up to 16 rows one pass while the [C, rows] scores fit WHOLE_TIER_SCORE_BYTES."""
    bc = reference.default_block_chunks(rows, chunks)
    assert bc == (chunks if whole else reference.BLOCK_CHUNKS)


@pytest.mark.parametrize("rows,chunks", [(1, 10**7), (4, 156_250), (16, 1000)])
def test_default_tiles_int8(rows, chunks):
    """An int8 tier with few rows is scanned in tiles of INT8_BLOCK_CHUNKS (its dequantisation
    is not fused into a whole-tier pass), or in one tile if smaller."""
    bc = reference.default_block_chunks(rows, chunks, quantized=True)
    assert bc == min(chunks, reference.INT8_BLOCK_CHUNKS)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5], CASES[7]], ids=lambda c: c.name)
def test_default_tiling_matches_oracle(case, monkeypatch):
    """The default tile rule's loop (several tiles and a ragged remainder) against float64."""
    monkeypatch.setattr(reference, "MIN_BLOCK_CHUNKS", 8)
    monkeypatch.setattr(reference, "SCORE_TILE_BYTES", 4 * case.batch * case.tokens * 16)
    monkeypatch.setattr(reference, "WHOLE_TIER_SCORE_BYTES", 0)
    monkeypatch.setattr(reference, "BLOCK_CHUNKS", 16)
    inputs = make_inputs(case)
    got = reference.routing_doc_scores(*inputs, **options(case))  # not jitted: no cached tiling
    kt.assert_close(got, oracles.np_routing_doc_scores(*inputs, **options(case)), case.dtype,
                    what=case.name)


@pytest.mark.parametrize("query_reduce", ["max", "mean"])
def test_mask_queries_makes_the_token_reduction_maskless(query_reduce):
    """Masked tokens become a duplicate of a kept token (max) or zeros (sum), so the unmasked
    reduction over all T equals the masked one; a row with no kept token is -inf after finalize."""
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.standard_normal((3, 5, 2, 8)), jnp.float32)
    q_mask = jnp.asarray([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    kr = rng.standard_normal((7, 16))
    got = reference.mask_queries(q, q_mask, query_reduce)
    s = np.einsum("btd,cd->cbt", np.asarray(got, np.float64).reshape(3, 5, 16), kr)  # [C, B, T]
    want = np.einsum("btd,cd->cbt", np.asarray(q, np.float64).reshape(3, 5, 16), kr)
    m = np.asarray(q_mask)[None]
    for b in range(2):  # rows with a kept token
        red = np.max if query_reduce == "max" else np.sum
        masked = np.where(m, want, -np.inf if query_reduce == "max" else 0.0)
        np.testing.assert_allclose(red(s[:, b], -1), red(masked[:, b], -1), rtol=1e-6)
    part = reference.token_reduce(jnp.asarray(s, jnp.float32), query_reduce).T  # [B, C]
    final = reference.finalize_token_reduce(part, q_mask, query_reduce)
    assert np.isneginf(np.asarray(final)[2]).all()
