"""XLA reference of the routing scan (the default on CPU and the test oracle).

Scores every pooled chunk of the routing tier against the routing queries, streaming the tier in
tiles of `block_chunks` chunks: per tile, [tile, B, T] head-reduced scores, reduced over the
tokens to [tile, B] (the token mask is applied to the queries, once: mask_queries). The
[B, N, T, C] tensor never exists. Chunk -> document reduction is an epilogue over the [B, C]
chunk scores (4 B per chunk and batch row, vs 2*K*H B of tier read).

Head mean is applied to the queries first: mean_n q_n . kr_{n//G} = sum_k (sum_g q_kg / N) . kr_k,
so "mean" costs K dot products per chunk instead of N (and one GEMM over (k, h) for "dot").
With a token mean as well the score is linear in the query, so the tokens fold into one query row
(fold_token_mean).

An int8 routing tier (symmetric, one float32 scale per chunk and KV head: kr = q * scale) is
dequantised tile by tile inside the scan (dequantize_tile): the tier is read as int8 and no float
copy of it is ever made.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kernels_pallas import common

EPS = 1e-6
# Tuned with benchmarks/kernels/cpu_routing_bandwidth.py and A/B runs of the same shapes
# (docs/kernels.md). With 2-16 query rows on XLA:CPU, a fused multiply + row-sum over K*H
# ("elementwise") streams the tier ~15-25% faster than the GEMM, whose micro-kernel pads the few
# rows; with one row the GEMV is fastest. Slicing the tier as [C, K*H] (a bitcast) matters too: a
# 3-D tile slice was copied.
ELEMENTWISE_ROWS = (2, 16)


def _use_elementwise(rows: int) -> bool:
    lo, hi = ELEMENTWISE_ROWS
    return jax.default_backend() == "cpu" and lo <= rows <= hi


# Tile sizes, tuned with A/B runs on XLA:CPU (docs/kernels.md). Up to 16 query rows (the fused
# multiply + row-sum, the GEMV) the whole tier is one pass while its [C, rows] float32 scores fit in
# WHOLE_TIER_SCORE_BYTES (a tile loop cost 20-40% more), else BLOCK_CHUNKS tiles. Above 16 rows
# (the GEMM) a tile holds as many chunks as keep its [tile, rows] scores near SCORE_TILE_BYTES
# (written by the GEMM and re-read by the token reduction in cache, not through DRAM; at least
# MIN_BLOCK_CHUNKS): a whole-tier pass of an 80-row question at K*H = 32, whose scores are 2.5x the
# tier bytes, was ~3x slower than these tiles.
# An int8 tier is the exception for few rows: its dequantisation is not fused into a whole-tier
# GEMV, so one pass wrote and re-read a float32 copy of the tier (8-10x slower at 131K-1.3M
# chunks, K*H = 64, one folded query row); tiles of INT8_BLOCK_CHUNKS (8K-32K measured alike)
# keep that copy in cache.
BLOCK_CHUNKS, WHOLE_TIER_SCORE_BYTES = 4096, 64 * 2**20
SCORE_TILE_BYTES, MIN_BLOCK_CHUNKS = 2 * 2**20, 1024
INT8_BLOCK_CHUNKS = 16384


def default_block_chunks(rows: int, chunks: int, quantized: bool = False) -> int:
    """Chunks per tile for `rows` query rows (per KV-head GEMM) over a tier of `chunks`
    (`quantized`: an int8 tier)."""
    chunks = max(chunks, 1)
    if quantized and rows <= ELEMENTWISE_ROWS[1]:
        return min(chunks, INT8_BLOCK_CHUNKS)
    if rows <= ELEMENTWISE_ROWS[1]:
        return chunks if chunks * rows * 4 <= WHOLE_TIER_SCORE_BYTES else BLOCK_CHUNKS
    fit = SCORE_TILE_BYTES // (4 * rows)
    tile = max(common.prev_pow2(max(fit, 1)), MIN_BLOCK_CHUNKS)
    return chunks if chunks <= tile else tile


def prepare_queries(qr, *, num_kv_heads: int, similarity: str, scale: float, head_reduce: str):
    """qr [B, T, N, H] -> effective routing queries [B, T, NQ, H] in common.accum_dtype(qr.dtype)
    (float32, or float64 for float64 inputs; so are the scores below).
    "mean": NQ = K (group-summed, divided by N; heads then reduce by sum); "max": NQ = N."""
    b, t, n, h = qr.shape
    q = qr.astype(common.accum_dtype(qr.dtype))
    if similarity == "cosine":
        q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), EPS)
    else:
        q = q * scale
    if head_reduce == "mean":
        q = q.reshape(b, t, num_kv_heads, n // num_kv_heads, h).sum(axis=3) / n  # [B, T, K, H]
    return q


def fold_token_mean(q, q_mask, query_reduce: str, head_reduce: str):
    """With head "mean" a score is linear in the prepared query, so the token mean of the scores is
    the score of the masked token mean: q [B, T, NQ, H] -> [B, 1, NQ, H], q_mask -> [B, 1] (any),
    and the scan then reduces one token by "max" (a T-fold cut of the scan's FLOPs; rows without a
    masked token still get -inf). Other settings pass through unchanged."""
    if query_reduce != "mean" or head_reduce != "mean":
        return q, q_mask, query_reduce
    m = q_mask[:, :, None, None]
    count = jnp.maximum(jnp.sum(q_mask, axis=1), 1).astype(q.dtype)[:, None, None, None]
    mean = jnp.sum(jnp.where(m, q, 0.0), axis=1, keepdims=True) / count
    return mean, jnp.any(q_mask, axis=1, keepdims=True), "max"


def score_dtype(kr_dtype):
    """The dtype a tier of `kr_dtype` is scored in: accum_dtype of a float tier, float32 for
    an int8 one."""
    return common.accum_dtype(kr_dtype)  # promote(int8, float32) = float32


def dequantize_tile(kr_tile, scale_tile, num_kv_heads: int):
    """kr_tile [c, K*H] int8, scale_tile [c, K] float32 -> [c, K*H] float32 (kr * scale, one
    exact product per value: the same numbers as dequantising the whole tier)."""
    c = kr_tile.shape[0]
    kr = kr_tile.astype(jnp.float32).reshape(c, num_kv_heads, -1)
    return (kr * scale_tile.astype(jnp.float32)[:, :, None]).reshape(c, -1)


def tile_scores(q, kr_tile, *, num_kv_heads: int, similarity: str, head_reduce: str,
                scale_tile=None):
    """q [B, T, NQ, H] (prepared); kr_tile [c, K*H] (scale_tile [c, K] with an int8 tile) ->
    head-reduced scores [c, B, T] in score_dtype(kr_tile.dtype).

    Chunk-major 2-D matmuls that stream the tile once: "mean" is one [c, K*H] x [K*H, B*T] GEMM
    (or, for 2-16 rows on CPU, a fused multiply + row-sum); "max" is one [c, H] x [H, B*T*G] GEMM
    per KV head. (A 3-operand einsum over (k, h) ran ~10x slower on XLA:CPU.)"""
    b, t, nq, h = q.shape
    c, k = kr_tile.shape[0], num_kv_heads
    acc = score_dtype(kr_tile.dtype)
    if scale_tile is not None:
        kr = dequantize_tile(kr_tile, scale_tile, k)
    else:
        kr = kr_tile.astype(acc)
    if similarity == "cosine":
        kr = kr.reshape(c, k, h)
        kr = (kr / jnp.maximum(jnp.linalg.norm(kr, axis=-1, keepdims=True), EPS)).reshape(c, k * h)
    q = q.astype(acc)
    hp = lax.Precision.HIGHEST
    if head_reduce == "mean":  # NQ == K
        q = q.reshape(b * t, k * h)
        if _use_elementwise(b * t):  # exact float32 products, summed in float32
            s = jnp.sum(kr[:, None, :] * q[None], axis=-1)  # [c, B*T]
        else:
            s = jnp.dot(kr, q.T, precision=hp)  # [c, B*T]
        return s.reshape(c, b, t)
    g = nq // k
    per_head = q.reshape(b * t, k, g, h)
    s = None
    for kv in range(k):
        s_k = jnp.dot(
            kr[:, kv * h : (kv + 1) * h], per_head[:, kv].reshape(b * t * g, h).T, precision=hp
        )  # [c, B*T*G]
        s_k = jnp.max(s_k.reshape(c, b, t, g), axis=-1)  # [c, B, T]
        s = s_k if s is None else jnp.maximum(s, s_k)
    return s


def mask_queries(q, q_mask, query_reduce: str):
    """Applies the token mask to the prepared queries q [B, T, NQ, H], once, so that the scan's
    token reduction needs no mask: for "max" a masked row becomes a copy of the row's first
    masked-in token (a duplicate cannot change a max), for "mean" (a sum) zeros (score 0). Rows
    with no masked-in token are set to -inf by finalize_token_reduce. (A per-chunk masked select
    cost ~35% of the scan at 80 query rows on XLA:CPU.)"""
    keep = q_mask[:, :, None, None]
    if query_reduce == "max":
        first = jnp.argmax(q_mask, axis=1)  # [B]
        fill = jnp.take_along_axis(q, first[:, None, None, None], axis=1)  # [B, 1, NQ, H]
        return jnp.where(keep, q, fill)
    return jnp.where(keep, q, jnp.zeros_like(q))


def token_reduce(s, query_reduce: str):
    """s [c, B, T] of mask_queries' queries -> [c, B]: max, or sum (divided in finalize)."""
    return jnp.max(s, axis=-1) if query_reduce == "max" else jnp.sum(s, axis=-1)


def finalize_token_reduce(partial, q_mask, query_reduce: str):
    """[B, C] partial (max, or sum) -> chunk scores [B, C]; rows with no masked token get -inf."""
    count = jnp.sum(q_mask, axis=1).astype(common.accum_dtype(partial.dtype))[:, None]  # [B, 1]
    scores = partial / jnp.maximum(count, 1.0) if query_reduce == "mean" else partial
    return jnp.where(count > 0, scores, -jnp.inf)


def chunks_to_documents(chunk_scores, chunk_doc, num_docs: int, chunk_reduce: str):
    """chunk_scores [B, C], chunk_doc [C] (-1: empty slot) -> [B, M];
    documents without a chunk get -inf."""
    seg = jnp.where(chunk_doc >= 0, chunk_doc, num_docs).astype(jnp.int32)  # empty slots -> bin M
    s = chunk_scores.T  # [C, B]
    if chunk_reduce == "max":
        docs = jax.ops.segment_max(s, seg, num_segments=num_docs + 1)
    else:
        ones = jnp.ones_like(seg, common.accum_dtype(chunk_scores.dtype))
        count = jax.ops.segment_sum(ones, seg, num_segments=num_docs + 1)
        docs = (
            jax.ops.segment_sum(s, seg, num_segments=num_docs + 1)
            / jnp.maximum(count, 1.0)[:, None]
        )
        docs = jnp.where(count[:, None] > 0, docs, -jnp.inf)
    return docs[:num_docs].T  # [B, M]


def chunk_partials(
    q, q_mask, kr, *, similarity, head_reduce, query_reduce, block_chunks, kr_scale=None
):
    """Streams kr [C, K, H] (int8 with kr_scale [C, K]) in tiles -> token-reduced partials [B, C]
    (float32, or float64)."""
    c, k, h = kr.shape
    flat = kr.reshape(c, k * h)  # a bitcast, no copy
    q = mask_queries(q, q_mask, query_reduce)
    per_tile = lambda tile, scale: token_reduce(
        tile_scores(
            q, tile, num_kv_heads=k, similarity=similarity, head_reduce=head_reduce,
            scale_tile=scale,
        ),
        query_reduce,
    )
    n_full = c // block_chunks
    parts = []  # [c_i, B] each
    if n_full:

        def body(i, _):  # dynamic_slice of the tier: no padded or re-laid-out copy of it
            tile = lax.dynamic_slice_in_dim(flat, i * block_chunks, block_chunks, axis=0)
            scale = None if kr_scale is None else lax.dynamic_slice_in_dim(
                kr_scale, i * block_chunks, block_chunks, axis=0)
            return i + 1, per_tile(tile, scale)

        _, full = lax.scan(body, 0, None, length=n_full)  # [n, bc, B]
        parts.append(full.reshape(n_full * block_chunks, q.shape[0]))
    if c % block_chunks or not n_full:
        rest = n_full * block_chunks
        parts.append(per_tile(flat[rest:], None if kr_scale is None else kr_scale[rest:]))
    return jnp.concatenate(parts, axis=0).T if len(parts) > 1 else parts[0].T


def routing_chunk_scores(
    qr,
    q_mask,
    kr,
    *,
    similarity="dot",
    scale=1.0,
    head_reduce="mean",
    query_reduce="max",
    block_chunks=None,
    partials=None,
    kr_scale=None,
):
    """qr [B, T, N, H], q_mask [B, T] bool, kr [C, K, H] -> [B, C] float32 chunk scores (float64
    for float64 inputs). An int8 kr comes with kr_scale [C, K] float32 (kr * scale is the tier).

    `partials` computes the token-reduced partials [B, C] from the prepared queries (the Pallas
    scan passes its kernel); default: this module's tiled XLA `chunk_partials`."""
    q = prepare_queries(
        qr,
        num_kv_heads=kr.shape[1],
        similarity=similarity,
        scale=scale,
        head_reduce=head_reduce,
    )
    q, q_mask, query_reduce = fold_token_mean(q, q_mask, query_reduce, head_reduce)
    q = q.astype(kr.dtype if kr_scale is None else score_dtype(kr.dtype))
    if partials is None:
        group = 1 if head_reduce == "mean" else q.shape[2] // kr.shape[1]  # rows per KV-head GEMM
        rows = q.shape[0] * q.shape[1] * group
        block_chunks = block_chunks or default_block_chunks(rows, kr.shape[0],
                                                            kr_scale is not None)
        partials = chunk_partials
    partial = partials(
        q,
        q_mask,
        kr,
        similarity=similarity,
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        block_chunks=block_chunks,
        kr_scale=kr_scale,
    )
    return finalize_token_reduce(partial, q_mask, query_reduce)


def routing_doc_scores(
    qr,
    q_mask,
    kr,
    chunk_doc,
    *,
    num_docs,
    similarity="dot",
    scale=1.0,
    head_reduce="mean",
    query_reduce="max",
    chunk_reduce="max",
    block_chunks=None,
    partials=None,
    kr_scale=None,
):
    """-> [B, M] float32 (float64 for float64 inputs) document scores (see SPEC.md §1);
    `partials`, `kr_scale` as routing_chunk_scores."""
    chunk = routing_chunk_scores(
        qr,
        q_mask,
        kr,
        similarity=similarity,
        scale=scale,
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        block_chunks=block_chunks,
        partials=partials,
        kr_scale=kr_scale,
    )
    return chunks_to_documents(chunk, chunk_doc, num_docs, chunk_reduce)


def topk_documents(doc_scores, k: int):
    """doc_scores [B, M] -> (scores [B, k], ids [B, k] int32), descending; -inf scores last."""
    scores, ids = lax.top_k(doc_scores, k)
    return scores, ids.astype(jnp.int32)
