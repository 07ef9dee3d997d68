"""The router (docs/msa.md §4, §6): routing queries, document scores, top-k, chunk selection.

Scoring itself (similarity, head/token/chunk reductions over the routing tier) is the
`routing_doc_scores` kernel; this module prepares its inputs and turns scores into the chunks a
layer attends to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas import routing_doc_scores, topk_documents
from kernels_pallas.common import accum_dtype
from msa_jax.config import MSAConfig, ModelConfig

Array = jax.Array


def routing_query(qr: Array, head_dim: int, cosine: bool) -> Array:
    """The routing query as it meets the pooled router keys: L2-normalised over H for cosine,
    else scaled by H^-0.5 (the reference's inference rule). qr [B, T, N, H] -> accum_dtype
    (float32, or float64 for float64 inputs)."""
    qr = qr.astype(accum_dtype(qr.dtype))
    if cosine:
        return qr / jnp.maximum(jnp.linalg.norm(qr, axis=-1, keepdims=True), 1e-6)
    return qr * head_dim ** -0.5


def reduce_mask(msa: MSAConfig, routing_mask: Array) -> tuple[Array, str]:
    """Routing-token mask [B, T] and the token reduction the kernel runs.

    `query_reduce="last"` becomes a one-token mask and a max: the last routing token, or, under
    `last_query_rule="upstream"`, index (#routing tokens - 1) of the padded row (the reference's
    rule; under left padding it can land on a pad, which masks the whole row).
    """
    routing_mask = routing_mask.astype(bool)
    if msa.query_reduce != "last":
        return routing_mask, msa.query_reduce
    t = routing_mask.shape[1]
    if msa.last_query_rule == "upstream":
        pick = jnp.sum(routing_mask, axis=1) - 1  # [B]
    else:
        pick = t - 1 - jnp.argmax(routing_mask[:, ::-1], axis=1)
    one_hot = jnp.arange(t)[None, :] == pick[:, None]
    return routing_mask & one_hot, "max"


def routing_rows(msa: MSAConfig, routing_mask: Array, rows: int | None) -> tuple[Array, Array]:
    """Where each row's routing-query tokens are, compacted to `rows` slots (static).

    routing_mask [B, T] -> (index [B, rows] int32, mask [B, rows] bool): the tokens the kernel
    reduces over (after `reduce_mask`, so `query_reduce="last"` keeps its one token), in order,
    then padding slots (masked). The scan then scores `rows` query rows instead of the T of the
    padded prompt. `rows` must be >= the count of routing tokens in every row (the host knows it:
    inference.memory_generate.pack_rows); None keeps all T (index = arange(T), the mask as given).
    `reduce_mask` of the compacted mask is the compacted mask (its one "last" token is slot 0).
    """
    b, t = routing_mask.shape
    if rows is None:
        return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), routing_mask.astype(bool)
    mask, _ = reduce_mask(msa, routing_mask)
    if not 1 <= rows <= t:
        raise ValueError(f"routing rows must be in [1, {t}] (the padded query length), got {rows}")
    index = jnp.argsort(~mask, axis=1, stable=True)[:, :rows].astype(jnp.int32)  # masked first
    return index, jnp.take_along_axis(mask, index, axis=1)


def gather_rows(qr: Array, index: Array) -> Array:
    """qr [B, T, N, H], index [B, R] (routing_rows) -> [B, R, N, H]."""
    return jnp.take_along_axis(qr, index[:, :, None, None], axis=1)


def document_scores(cfg: ModelConfig, qr: Array, routing_mask: Array, routing_keys: Array,
                    chunk_doc: Array, num_docs: int, cosine: bool,
                    routing_scale: Array | None = None, unit_keys: bool = False) -> Array:
    """qr [B, T, N, H] raw router queries; routing_keys [C, K, H] (int8 with routing_scale
    [C, K]) -> doc scores [B, M] float32 (float64 for a float64 model; -inf for documents that
    are absent or rows without routing tokens). unit_keys: the keys (dequantised) are unit
    vectors already, so cosine is the dot product of the normalised query with them (the scan
    then streams the tier once, not normalising every key per question)."""
    msa = cfg.msa
    mask, query_reduce = reduce_mask(msa, routing_mask)
    q = routing_query(qr, cfg.head_dim, cosine)  # unit vectors for cosine
    return routing_doc_scores(
        q, mask, routing_keys, chunk_doc, num_docs=num_docs,
        similarity="cosine" if cosine and not unit_keys else "dot", scale=1.0,
        head_reduce=msa.head_reduce,
        query_reduce=query_reduce, chunk_reduce=msa.chunk_reduce,
        implementation=cfg.kernel_implementation, interpret=cfg.kernel_interpret,
        kr_scale=routing_scale)


def select_documents(doc_scores: Array, k: int) -> tuple[Array, Array, Array]:
    """Top-k documents per row. Returns (ids [B, k] in descending score, scores [B, k],
    valid [B, k]); a slot is invalid when fewer than k documents have a finite score."""
    k = min(k, doc_scores.shape[-1])
    scores, ids = topk_documents(doc_scores, k)
    return ids.astype(jnp.int32), scores, jnp.isfinite(scores)


def selected_chunks(doc_ids: Array, doc_valid: Array, doc_chunk_offset: Array,
                    doc_num_chunks: Array, max_doc_chunks: int) -> tuple[Array, Array]:
    """Chunk slots of the selected documents, documents in ascending index (the reference's fetch
    order; softmax does not care) and each document's chunks in order.

    doc_ids, doc_valid [B, k] -> (chunk_idx [B, k * max_doc_chunks] int32, valid [B, k * ...]).
    """
    big = jnp.iinfo(jnp.int32).max
    order = jnp.argsort(jnp.where(doc_valid, doc_ids, big), axis=-1)
    ids = jnp.take_along_axis(doc_ids, order, axis=-1)  # [B, k]
    ok = jnp.take_along_axis(doc_valid, order, axis=-1)
    j = jnp.arange(max_doc_chunks, dtype=jnp.int32)  # [Cd]
    start = doc_chunk_offset[ids]  # [B, k]
    count = jnp.where(ok, doc_num_chunks[ids], 0)
    idx = start[..., None] + j  # [B, k, Cd]
    valid = j < count[..., None]
    b = ids.shape[0]
    return jnp.where(valid, idx, 0).reshape(b, -1), valid.reshape(b, -1)
