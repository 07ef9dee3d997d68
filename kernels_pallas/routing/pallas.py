"""Pallas (Triton) routing scan: one program per tile of `block_chunks` pooled chunks.

Each program reads its tile of the routing tier from HBM once ([bc, K, H], cosine-normalised in
registers), scores it against all routing queries (head reduction accumulated across the KV heads,
then a masked token reduction) and writes [B, bc] token-reduced partials. The tiny XLA epilogue
(shared with the reference) finishes the token mean and reduces chunks to documents: the [B, C]
float32 partials are 4*B bytes per chunk against 2*K*H bytes of tier read (0.2% at B = 1, MSA-4B).
Top-k stays in XLA (lax.top_k does not lower in Pallas-Triton). An int8 tier is read as int8 and
dequantised in registers (its [bc, K] scales are a second, 4/H-sized input).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels_pallas import common
from kernels_pallas.attention_core import block_math as bm
from kernels_pallas.routing import reference

BLOCK_CHUNKS, BLOCK_TOKENS = 64, 16
NUM_WARPS, NUM_STAGES = 4, 2


def _routing_kernel(
    q_ref,
    mask_ref,
    kr_ref,
    *refs,
    num_kv_heads,
    group,
    block_tokens,
    cosine,
    head_max,
    token_max,
    num_chunks,
):
    """q_ref [B, NQ, Tp, H]; mask_ref [B, Tp] float32; kr_ref [bc, K, H]; refs: (out_ref [B, bc])
    or, for an int8 tier, (scale_ref [bc, K, 1] float32, out_ref).
    num_chunks: C when the last tile is ragged (its rows >= C are never read), else None."""
    scale_ref, out_ref = refs if len(refs) == 2 else (None, refs[0])
    batch, _, tokens, _ = q_ref.shape
    block_chunks = kr_ref.shape[0]
    precision = bm.precision_for(q_ref.dtype)
    neg_inf = jnp.float32(bm.NEG_INF)
    limit = None if num_chunks is None else num_chunks - pl.program_id(0) * block_chunks

    def kv_tile(k):  # [bc, H] tier slice of KV head k, and its 1/|kr| [bc] (cosine)
        kr = common.load_rows(kr_ref, 0, block_chunks, limit, jnp.int32(k), slice(None))
        if scale_ref is not None:  # [bc, H] int8 * [bc, 1]
            scale = common.load_rows(scale_ref, 0, block_chunks, limit, jnp.int32(k), slice(None))
            kr = kr.astype(jnp.float32) * scale
        if not cosine:
            return kr, None
        norm = jnp.sqrt(jnp.sum(kr.astype(jnp.float32) ** 2, axis=1))
        return kr, 1.0 / jnp.maximum(norm, reference.EPS)

    def token_block(b, j, running):
        sl = pl.ds(j * block_tokens, block_tokens)
        acc = None  # [bt, bc] head-reduced scores
        for k in range(num_kv_heads):
            kr, inv_norm = kv_tile(k)
            for g in range(group):
                s = bm.dot_nt(q_ref[b, k * group + g, sl, :], kr, precision)  # [bt, bc]
                s = s if inv_norm is None else s * inv_norm[None, :]
                acc = s if acc is None else (jnp.maximum(acc, s) if head_max else acc + s)
        mask = mask_ref[b, sl] > 0  # [bt]
        if token_max:
            return jnp.maximum(running, jnp.max(jnp.where(mask[:, None], acc, neg_inf), axis=0))
        return running + jnp.sum(jnp.where(mask[:, None], acc, 0.0), axis=0)

    def batch_row(b, carry):
        init = jnp.full((out_ref.shape[1],), neg_inf if token_max else 0.0, jnp.float32)
        out_ref[b, :] = lax.fori_loop(
            0, tokens // block_tokens, functools.partial(token_block, b), init
        )
        return carry

    lax.fori_loop(0, batch, batch_row, 0)


def chunk_partials(
    q, q_mask, kr, *, similarity, head_reduce, query_reduce, block_chunks, interpret, kr_scale=None
):
    """q [B, T, NQ, H] prepared queries; q_mask [B, T]; kr [C, K, H] (int8 with kr_scale [C, K])
    -> partials [B, C] float32."""
    b, t, nq, h = q.shape
    c, k, _ = kr.shape
    bc = block_chunks or common.block_size(c, BLOCK_CHUNKS)
    bt = common.block_size(t, BLOCK_TOKENS)
    tp, cp, hp = common.round_up(t, bt), common.round_up(c, bc), common.next_pow2(h)
    q = common.pad_axis(common.pad_axis(q, 1, tp), 3, hp).transpose(0, 2, 1, 3)  # [B, NQ, Tp, Hp]
    mask = common.pad_axis(q_mask.astype(jnp.float32), 1, tp)  # [B, Tp]
    # The tier is never padded along C (the ragged last tile uses masked loads); a head dim that is
    # not a power of two is (a copy of the tier: MSA's H = 128 never needs it).
    kr = common.pad_axis(kr, 2, hp)  # [C, K, Hp]
    kernel = functools.partial(
        _routing_kernel,
        num_kv_heads=k,
        group=nq // k,
        block_tokens=bt,
        cosine=similarity == "cosine",
        head_max=head_reduce == "max",
        token_max=query_reduce == "max",
        num_chunks=c if c % bc else None,
    )
    in_specs = [
        pl.BlockSpec(q.shape, lambda i: (0, 0, 0, 0)),
        pl.BlockSpec(mask.shape, lambda i: (0, 0)),
        pl.BlockSpec((bc, k, hp), lambda i: (i, 0, 0)),
    ]
    inputs = [q, mask, kr]
    if kr_scale is not None:  # [C, K, 1]: a bitcast; one head's scales load like a tier row
        in_specs.append(pl.BlockSpec((bc, k, 1), lambda i: (i, 0, 0)))
        inputs.append(kr_scale.astype(jnp.float32)[:, :, None])
    out = pl.pallas_call(
        kernel,
        grid=(cp // bc,),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((b, bc), lambda i: (0, i)),
        out_shape=jax.ShapeDtypeStruct((b, cp), jnp.float32),
        compiler_params=common.compiler_params(NUM_WARPS, NUM_STAGES),
        interpret=interpret,
        name="msa_routing_scan",
    )(*inputs)
    return out[:, :c]


def routing_doc_scores(qr, q_mask, kr, chunk_doc, *, num_docs, interpret=False, **options):
    """Same contract as reference.routing_doc_scores -> [B, M] float32; the scan is the kernel."""
    partials = functools.partial(chunk_partials, interpret=interpret)
    return reference.routing_doc_scores(
        qr, q_mask, kr, chunk_doc, num_docs=num_docs, partials=partials, **options
    )
