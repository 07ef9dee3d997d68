"""Stage 2 (docs/msa.md §4): prefill a question against the memory.

In every router layer the routing queries score the routing tier, the top-k documents are
selected (per layer), their pooled chunks are fetched from the content tier, and the layer's
queries attend to [prefix ; selected chunks ; own tokens (causal)]. Non-router layers attend to
[prefix ; own tokens]. The chunks chosen here stay in the cache for decoding.
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from msa_jax.config import ModelConfig
from msa_jax.model.cache import KVCache, MemoryKV, empty_cache
from msa_jax.model.decode import forward_step
from msa_jax.model.router import (document_scores, gather_rows, routing_rows, select_documents,
                                  selected_chunks)
from msa_jax.model.transformer import Projections

Array = jax.Array


@flax.struct.dataclass
class MemoryView:
    """The arrays of a memory bank stage 2 reads (R router layers, C chunk slots, M doc slots).

    routing_keys is the routing tier (on the accelerator); content_k/content_v the content tier
    (may live in host memory: see `fetch`). Each is indexed by router-layer slot r and gives
    [C, K, H]: a tuple of R arrays (slicing one [R, C, K, H] array inside jit copies the slice),
    or an [R, C, K, H] array.
    chunk_doc [C] int32 (-1: empty slot); doc_chunk_offset, doc_num_chunks [M] int32.
    routing_scale: None for a float routing tier; for an int8 one (msa_jax.memory.quantize), per
    router layer slot the [C, K] float32 scales (routing_keys[r] * routing_scale[r][..., None]).
    unit_keys: the routing keys (dequantised) are already unit vectors per head, so cosine
    scoring skips their per-question normalisation (MemoryBank.view(unit_keys=True)).
    """

    routing_keys: Array
    content_k: Array
    content_v: Array
    chunk_doc: Array
    doc_chunk_offset: Array
    doc_num_chunks: Array
    routing_scale: Array | None
    max_doc_chunks: int = flax.struct.field(pytree_node=False)
    unit_keys: bool = flax.struct.field(pytree_node=False, default=False)

    @property
    def num_docs(self) -> int:
        return self.doc_chunk_offset.shape[0]


@flax.struct.dataclass
class RoutingInfo:
    """One router layer's choice: doc_ids, scores, valid [B, k]; doc_scores [B, M] or None."""

    doc_ids: Array
    scores: Array
    valid: Array
    doc_scores: Array | None = None


# select(cfg, memory, r, qr [B,R,N,H], routing_mask [B,R]) -> RoutingInfo: the top-k documents
# of router layer slot r (doc_scores may be None); the R rows are the routing-query tokens
# (make_route compacts them; R = T of the prompt when prefill_with_memory gets no routing_rows). The default scores the whole routing tier;
# memory parallel (msa_jax.memory.parallel) scores shards and merges their local top-k.
SelectFn = Callable[[ModelConfig, "MemoryView", int, Array, Array], "RoutingInfo"]
# fetch(memory, r, chunk_idx [B, S]) -> (k, v) [B, S, K, H] on the device running attention
FetchFn = Callable[["MemoryView", int, Array], tuple[Array, Array]]


def local_select(cfg: ModelConfig, memory: "MemoryView", r: int, qr: Array,
                 routing_mask: Array) -> "RoutingInfo":
    scale = None if memory.routing_scale is None else memory.routing_scale[r]
    doc_scores = document_scores(cfg, qr, routing_mask, memory.routing_keys[r], memory.chunk_doc,
                                 memory.num_docs, cfg.msa.inference_cosine, scale,
                                 unit_keys=memory.unit_keys)  # [B, M]
    ids, scores, valid = select_documents(doc_scores, cfg.msa.top_k_docs)
    return RoutingInfo(ids, scores, valid, doc_scores)


def local_fetch(memory: "MemoryView", r: int, chunk_idx: Array) -> tuple[Array, Array]:
    return memory.content_k[r][chunk_idx], memory.content_v[r][chunk_idx]


def make_route(cfg: ModelConfig, memory: MemoryView, routing_mask: Array, select: SelectFn,
               fetch: FetchFn, keep_doc_scores: bool = False, rows: int | None = None):
    """The `route` hook of forward_step for stage 2. `select` sees only the routing-query rows,
    compacted to `rows` slots (router.routing_rows): padding and context tokens are not scanned.
    With `msa.shared_selection` only the first router layer selects; the later ones read its
    documents (and report its RoutingInfo)."""
    index, mask = routing_rows(cfg.msa, routing_mask, rows)  # [B, rows] each
    first: list[RoutingInfo] = []  # the first router layer's choice (layers run in order)

    def route(layer: int, p: Projections):
        r = cfg.msa.router_index(layer)
        if cfg.msa.shared_selection and first:
            info = first[0]
        else:
            info = select(cfg, memory, r, gather_rows(p.qr, index), mask)
            first.append(info)
        chunk_idx, chunk_valid = selected_chunks(info.doc_ids, info.valid,
                                                 memory.doc_chunk_offset, memory.doc_num_chunks,
                                                 memory.max_doc_chunks)
        k, v = fetch(memory, r, chunk_idx)  # [B, k * Cd, K, H]
        if not keep_doc_scores:
            info = info.replace(doc_scores=None)
        return MemoryKV(k.astype(cfg.dtype), v.astype(cfg.dtype), chunk_valid), info

    return route


def prefix_cache(cfg: ModelConfig, prefix_k: Array, prefix_v: Array, batch: int,
                 capacity: int) -> KVCache:
    """An empty cache whose first Pf slots hold the prefix (time -1: visible to every query)."""
    pf = prefix_k.shape[1]
    cache = empty_cache(cfg, batch, capacity)
    layers = tuple(
        layer.replace(k=layer.k.at[:, :pf].set(prefix_k[i].astype(layer.k.dtype)),
                      v=layer.v.at[:, :pf].set(prefix_v[i].astype(layer.v.dtype)))
        for i, layer in enumerate(cache.layers))
    return KVCache(layers, cache.time.at[:, :pf].set(-1), jnp.asarray(pf, jnp.int32))


def prefill_with_memory(cfg: ModelConfig, params, memory: MemoryView, cache: KVCache,
                        tokens: Array, positions: Array, k_time: Array, q_time: Array,
                        routing_mask: Array, select: SelectFn | None = None,
                        fetch: FetchFn | None = None, keep_doc_scores: bool = False,
                        collect_hidden: bool = False, routing_rows: int | None = None):
    """Stage-2 prefill. tokens, positions, k_time, q_time, routing_mask [B, T].

    routing_rows (static): the routing tokens of each row are compacted into that many query rows
    before the scan (>= the most routing tokens of any row; None: all T rows are scanned, masked).

    Returns (hidden [B, T, D], cache (with each router layer's memory), (routing info per layer,
    hidden states or None)).
    """
    route = make_route(cfg, memory, routing_mask, select or local_select, fetch or local_fetch,
                       keep_doc_scores, routing_rows)
    return forward_step(cfg, params, cache, tokens, positions, k_time, q_time, route=route,
                        collect_hidden=collect_hidden)
