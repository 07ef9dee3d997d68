"""Routing dispatchers: routing_doc_scores (XLA or Pallas), routing_chunk_scores, topk_documents."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.routing import pallas
from kernels_pallas.routing import reference

SIMILARITIES = ("dot", "cosine")
HEAD_REDUCES = ("mean", "max")
QUERY_REDUCES = ("max", "mean")
CHUNK_REDUCES = ("max", "mean")
_OPTIONS = ("similarity", "scale", "head_reduce", "query_reduce", "block_chunks")


def _validate(qr, q_mask, kr, kr_scale, *, similarity, head_reduce, query_reduce, block_chunks):
    common.check_array("qr", qr, (None, None, None, None), "float")
    b, t, n, h = qr.shape
    common.check_array("q_mask", q_mask, (b, t), [jnp.bool_])
    if kr_scale is None:
        common.check_array("kr", kr, (None, None, h), "float")
    else:  # an int8 tier and its per-(chunk, KV head) scales
        common.check_array("kr", kr, (None, None, h), [jnp.int8])
        common.check_array("kr_scale", kr_scale, kr.shape[:2], [jnp.float32])
    common.check_gqa(n, kr.shape[1], "qr", "kr")
    common.check_choice("similarity", similarity, SIMILARITIES)
    common.check_choice("head_reduce", head_reduce, HEAD_REDUCES)
    common.check_choice("query_reduce", query_reduce, QUERY_REDUCES)
    if block_chunks is not None and (block_chunks < 1 or block_chunks & (block_chunks - 1)):
        raise ValueError(f"block_chunks must be a positive power of two, got {block_chunks}")


@functools.partial(
    jax.jit, static_argnames=("num_docs", "chunk_reduce", "implementation", "interpret") + _OPTIONS
)
def _doc_scores(qr, q_mask, kr, chunk_doc, kr_scale, *, num_docs, implementation, interpret,
                **options):
    if implementation == "pallas":
        return pallas.routing_doc_scores(
            qr, q_mask, kr, chunk_doc, num_docs=num_docs, interpret=interpret, kr_scale=kr_scale,
            **options
        )
    return reference.routing_doc_scores(
        qr, q_mask, kr, chunk_doc, num_docs=num_docs, kr_scale=kr_scale, **options
    )


_chunk_scores = jax.jit(reference.routing_chunk_scores, static_argnames=_OPTIONS)
_topk = jax.jit(reference.topk_documents, static_argnums=1)


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
    implementation="auto",
    interpret=False,
    block_chunks=None,
    kr_scale=None,
):
    """Document scores of the routing scan (SPEC.md §1).

    qr [B, T, N, H] routing queries; q_mask [B, T] bool (tokens that score memory); kr [C, K, H]
    routing tier (pooled router keys of one router layer); chunk_doc [C] int32 chunk -> document in
    [0, num_docs), -1 for an empty slot. Returns [B, num_docs] float32; rows with no masked token and
    documents with no chunk get -inf. block_chunks: chunks per tile (power of two).
    kr_scale [C, K] float32: kr is an int8 tier whose values are kr * kr_scale (dequantised per
    tile inside the scan; SPEC.md §1).
    """
    _validate(
        qr,
        q_mask,
        kr,
        kr_scale,
        similarity=similarity,
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        block_chunks=block_chunks,
    )
    common.check_array("chunk_doc", chunk_doc, (kr.shape[0],), "int")
    common.check_choice("chunk_reduce", chunk_reduce, CHUNK_REDUCES)
    if not isinstance(num_docs, int) or num_docs < 0:
        raise ValueError(f"num_docs must be a non-negative int, got {num_docs!r}")
    return _doc_scores(
        qr,
        q_mask,
        kr,
        chunk_doc,
        kr_scale,
        num_docs=num_docs,
        similarity=similarity,
        scale=float(scale),
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        chunk_reduce=chunk_reduce,
        block_chunks=block_chunks,
        implementation=common.resolve_implementation(implementation),
        interpret=bool(interpret),
    )


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
):
    """[B, C] float32 chunk scores (heads and tokens reduced, no chunk -> document reduce).
    XLA only: a debugging and golden-output aid. Arguments as routing_doc_scores."""
    _validate(
        qr,
        q_mask,
        kr,
        None,
        similarity=similarity,
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        block_chunks=block_chunks,
    )
    return _chunk_scores(
        qr,
        q_mask,
        kr,
        similarity=similarity,
        scale=float(scale),
        head_reduce=head_reduce,
        query_reduce=query_reduce,
        block_chunks=block_chunks,
    )


def topk_documents(doc_scores, k: int):
    """doc_scores [B, M] float -> (scores [B, k] float32, ids [B, k] int32), descending.
    Finite scores always rank above -inf; an id whose score is -inf selects no real document."""
    common.check_array("doc_scores", doc_scores, (None, None), "float")
    if not isinstance(k, int) or not 1 <= k <= doc_scores.shape[1]:
        raise ValueError(
            f"k must be an int in [1, {doc_scores.shape[1]}] (the number of documents "
            f"of doc_scores {tuple(doc_scores.shape)}), got {k!r}"
        )
    return _topk(doc_scores, k)
