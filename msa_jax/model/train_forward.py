"""The training forward (docs/msa.md §6), sharing the layers with inference.

A sample packs [template head | documents | question | template tail | response]. Document tokens
attend within their own document (document-wise causal attention, document-wise positions). The
other tokens ("active": doc role < 1) attend causally to each other; in router layers they also
attend to the pooled chunks of the top-k documents the question selects (cosine routing, hard
top-k), placed where the documents stand: after the template head, before the question.
The router projections get no gradient through top-k; they learn from the auxiliary loss on the
returned document scores.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from kernels_pallas import INVALID_TIME, document_attention, sparse_memory_attention
from kernels_pallas.common import cdiv
from msa_jax.config import ModelConfig
from msa_jax.model.decode import kernel_kwargs
from msa_jax.model.pooling import document_chunk_ids, pool_chunks
from msa_jax.model.router import document_scores, gather_rows, routing_rows, select_documents
from msa_jax.model.transformer import Projections, Transformer

Array = jax.Array
READ_LABEL = 2  # doc_labels: a relevant document the step reads (train_forward's read_target)


@flax.struct.dataclass
class TrainBatch:
    """tokens, positions, roles, mask, labels [B, L] int32; doc_labels [B, M] (1 = relevant,
    READ_LABEL = relevant and read by the step under `read_target`).

    roles: > 0 the token's document (1..M within the sample), 0 question (routing query) or pad,
    -1 response / other active tokens, -2 template. labels: -100 where no loss is taken.
    """

    tokens: Array
    positions: Array
    roles: Array
    mask: Array
    labels: Array
    doc_labels: Array


@flax.struct.dataclass
class TrainOutputs:
    hidden: Array  # [B, L, D] final-normed
    doc_scores: tuple[Array, ...]  # per router layer [B, M + 1]; column 0 and absent docs -inf
    selected: tuple[Array, ...]  # per router layer [B, k] selected in-sample doc ids
    # with batch negatives: per router layer [B, B * (M + 1)], row b's question against every
    # document of the batch (block b' = sample b''s documents, column 0 of a block -inf)
    batch_scores: tuple[Array, ...] | None = None


def _doc_layout(roles: Array, mask: Array, pool: int, num_docs: int):
    """Per-sample chunk offsets of documents 1..M and chunk -> document map.

    Returns chunk_offset [B, M + 1], chunk_doc [B, C] (-1 unused), with C = L // P + M.
    """
    b, length = roles.shape
    docs = jnp.arange(num_docs + 1)  # [M + 1]
    is_doc = (roles[:, :, None] == docs) & (roles[:, :, None] > 0) & (mask[:, :, None] > 0)
    n_tokens = is_doc.sum(1)  # [B, M + 1]
    n_chunks = cdiv(n_tokens, pool)
    offset = jnp.cumsum(n_chunks, axis=1) - n_chunks  # [B, M + 1]
    c = length // pool + num_docs
    slot = jnp.arange(c)  # [C]
    in_doc = (slot[None, None, :] >= offset[..., None]) & \
             (slot[None, None, :] < (offset + n_chunks)[..., None])  # [B, M + 1, C]
    chunk_doc = jnp.where(in_doc.any(1), jnp.argmax(in_doc, axis=1), -1)
    return offset, chunk_doc.astype(jnp.int32), c


def _batch_scores(cfg: ModelConfig, qr: Array, routing_mask: Array, kr: Array, chunk_doc: Array,
                  num_docs: int, rows: int) -> tuple[Array, Array]:
    """Every row's question against every document of the batch, in one scoring pass.

    qr [B, L, N, H]; routing_mask [B, L]; kr [B, C, K, H] pooled router keys; chunk_doc [B, C].
    Returns (all [B, B * (M + 1)], own [B, M + 1] = the diagonal blocks: the same numbers, so
    the selection and the loss never disagree by a rounding).
    """
    b, c, kh, h = kr.shape
    index, mask = routing_rows(cfg.msa, routing_mask, rows)  # [B, R]
    block = (num_docs + 1) * jnp.arange(b, dtype=jnp.int32)[:, None]  # [B, 1]
    flat_doc = jnp.where(chunk_doc >= 0, chunk_doc + block, -1).reshape(b * c)
    scores = document_scores(cfg, gather_rows(qr, index), mask, kr.reshape(b * c, kh, h),
                             flat_doc, b * (num_docs + 1), cfg.msa.training_cosine)
    rows_ = jnp.arange(b)
    return scores, scores.reshape(b, b, num_docs + 1)[rows_, rows_]


def _active_rows(active: Array, rows: int) -> tuple[Array, Array]:
    """active [B, L] -> (index [B, rows] of the active tokens in order, then others; valid)."""
    index = jnp.argsort(~active, axis=1, stable=True)[:, :rows].astype(jnp.int32)
    return index, jnp.take_along_axis(active, index, axis=1)


def train_forward(cfg: ModelConfig, params, batch: TrainBatch, num_docs: int,
                  batch_rows: int | None = None, max_segment: int | None = None,
                  max_active: int | None = None, read_target: bool = False) -> TrainOutputs:
    """num_docs: M, the most documents a sample of the batch holds (static).

    batch_rows: None scores each question against its own sample's documents; an int R
    (>= the routing tokens of every row: the packer checks) scores every question against every
    document of the batch (in-batch negatives, `batch_scores`), from its R routing tokens.
    max_segment, max_active: None attends over whole rows (O(L²) per layer); ints S >= every
    document's tokens and A >= every row's active tokens after the template head (the packer
    checks both) make the document attention banded (O(L·S)) and run the active tokens' own
    attention (with memory in router layers) on the head + A active tokens gathered out of the
    row. The same function either way (up to float reassociation).
    read_target: the active tokens attend to the pooled chunks of the documents marked
    READ_LABEL in `doc_labels` (the step's right documents: selection teacher-forced, as a
    retriever's gold passages) instead of the router's top-k; the scores, the selection they
    make (`selected`) and so the routing loss are unchanged.
    msa.shared_selection: every router layer reads the first router layer's selection (its own
    scores, `selected` and routing loss unchanged).
    """
    msa = cfg.msa
    roles, mask = batch.roles, batch.mask
    b, length = roles.shape
    segment = jnp.where(mask > 0, jnp.maximum(roles, 0), -1)  # 0 = active, d = document d
    active = segment == 0
    seq = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    local_time = jnp.where(active, seq, INVALID_TIME)
    first_doc = jnp.argmax((roles > 0) & (mask > 0), axis=1).astype(jnp.int32)  # mem_time [B]
    routing_mask = (roles == 0) & (mask > 0)
    offset, chunk_doc, c = _doc_layout(roles, mask, msa.pooling_size, num_docs)
    chunk_ids = jax.vmap(document_chunk_ids, in_axes=(0, 0, None, 0))(
        jnp.where(roles > 0, roles, -1)[:, None], batch.positions[:, None], msa.pooling_size,
        offset)[:, 0]  # [B, L]
    kw = kernel_kwargs(cfg)
    # In-sample document scores go through the XLA routing reference on every backend: the
    # routing loss differentiates them (the Pallas routing scan has no VJP; it serves large
    # memories at inference) and a sample's few documents make them cheap. The attention kernels
    # keep cfg's implementation (Pallas with its VJPs on GPU).
    score_cfg = cfg.replace(kernel_implementation="xla", kernel_interpret=False)
    banded = max_segment is not None
    if banded != (max_active is not None):
        raise ValueError("give both max_segment and max_active, or neither")
    band = dict(band=max_segment, prefix=0) if banded else {}
    doc_segment = jnp.where(active, -1, segment) if banded else segment  # [B, L]
    if banded:  # the template head + A active tokens, gathered out of the row
        a_index, a_valid = _active_rows(active, min(length, len(msa.prefix_token_ids)
                                                    + max_active))  # [B, A]
        take = lambda x: jnp.take_along_axis(x, a_index.reshape(  # noqa: E731  [B, A, ...]
            a_index.shape + (1,) * (x.ndim - 2)), axis=1)
        a_seq = take(seq)
        a_time = jnp.where(a_valid, take(local_time), INVALID_TIME)
        rows = jnp.arange(b)[:, None]

    if msa.shared_selection and cfg.remat:  # the selection would cross the remat boundary
        raise ValueError("msa.shared_selection needs remat=False in training")
    first = []  # each router layer's (ids, valid); with msa.shared_selection all read the first

    def route(p: Projections):
        """Score, select and lay out the memory of one router layer."""
        pool = jax.vmap(lambda x, ids: pool_chunks(x[None], ids[None], c))
        kr, k, v = pool(p.kr, chunk_ids), pool(p.k, chunk_ids), pool(p.v, chunk_ids)  # [B,C,K,H]
        if batch_rows is None:
            every = None
            scores = jax.vmap(lambda qr, m, routing_keys, cd: document_scores(
                score_cfg, qr[None], m[None], routing_keys, cd, num_docs + 1,
                msa.training_cosine)[0])(p.qr, routing_mask, kr, chunk_doc)  # [B, M + 1]
        else:
            every, scores = _batch_scores(score_cfg, p.qr, routing_mask, kr, chunk_doc, num_docs,
                                          batch_rows)
        ids, _, valid = select_documents(scores, msa.top_k_docs)  # [B, k]
        first.append((ids, valid))
        read_ids, read_valid = first[0] if msa.shared_selection else (ids, valid)
        if read_target:
            read = jnp.pad(batch.doc_labels == READ_LABEL, ((0, 0), (1, 0)))  # [B, M + 1]
            chosen = jnp.take_along_axis(read, jnp.maximum(chunk_doc, 0), axis=1)  # [B, C]
        else:
            chosen = (chunk_doc[:, :, None] == jnp.where(read_valid, read_ids, -2)[:, None, :]
                      ).any(-1)
        kh, h = k.shape[2:]
        mem = dict(mem_k=k.reshape(b * c, kh, h).astype(p.k.dtype),
                   mem_v=v.reshape(b * c, kh, h).astype(p.v.dtype),
                   mem_idx=jnp.arange(b * c, dtype=jnp.int32).reshape(b, c),
                   mem_valid=chosen & (chunk_doc >= 0), mem_time=first_doc)
        return mem, (scores, ids, every)

    def attend(i: int, p: Projections):
        o = document_attention(p.q, p.k, p.v, doc_segment, **kw, **band)  # [B, L, N, H]
        routed = cfg.is_router_layer(i)
        if not (routed or banded):
            return o, None  # the active tokens' attention is in `o` already
        mem, extra = route(p) if routed else ({}, None)
        if not banded:  # the whole row: no gather, inactive rows keep the document attention
            o_active = sparse_memory_attention(p.q, seq, p.k, p.v, local_time, **mem, **kw)
            return jnp.where(active[..., None, None], o_active, o), extra
        o_active = sparse_memory_attention(take(p.q), a_seq, take(p.k), take(p.v), a_time,
                                           **mem, **kw)  # [B, A, N, H]
        o_active = jnp.where(a_valid[..., None, None], o_active, take(o))
        return o.at[rows, a_index].set(o_active), extra

    h, extras, _ = Transformer(cfg).apply({"params": params}, batch.tokens, batch.positions,
                                          attend)
    routed = [e for e in extras if e is not None]
    every = None if batch_rows is None else tuple(e[2] for e in routed)
    return TrainOutputs(h, tuple(e[0] for e in routed), tuple(e[1] for e in routed), every)
