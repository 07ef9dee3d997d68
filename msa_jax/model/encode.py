"""Stage 1 (docs/msa.md §3): encode packed documents and pool the router layers' K, V, K_r.

Documents are packed into a block with segment ids: causal attention within a document only,
positions restarting at 0 in every document (document-wise RoPE). Lower-layer K/V are discarded;
router layers give per-chunk means of the keys (after k_norm and RoPE), values and router keys.
The fixed chat prefix is encoded once, through every layer, with `encode_prefix`.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from kernels_pallas import document_attention
from msa_jax.config import ModelConfig
from msa_jax.model.cache import KVCache, empty_cache, step_times
from msa_jax.model.decode import forward_step, kernel_kwargs
from msa_jax.model.pooling import pool_chunks
from msa_jax.model.transformer import Projections, Transformer

Array = jax.Array


@flax.struct.dataclass
class PooledChunks:
    """One block's pooled chunks, per router layer: each [R, C, K, H] float32."""

    routing_keys: Array  # K̄r: mean router key (L2-normalised when stage 2 scores by cosine)
    content_k: Array  # K̄: mean key after k_norm and RoPE at document-local positions
    content_v: Array  # V̄


def l2_normalise(x: Array) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


@functools.partial(jax.jit, static_argnames=("cfg", "num_chunks", "collect_hidden", "band"))
def encode_block(cfg: ModelConfig, params, tokens: Array, positions: Array, segment_ids: Array,
                 chunk_ids: Array, num_chunks: int, collect_hidden: bool = False,
                 band: int | None = None):
    """Encode a packed block.

    tokens, positions, segment_ids, chunk_ids [B, L] int32: segment < 0 marks padding; chunk_ids
    (< num_chunks; -1 = pooled nowhere) say which chunk each token is averaged into.
    band: None, or an int > every document's length (the caller's guarantee): the XLA document
    attention is then banded, O(L·band) instead of O(L²), with the same result.
    Returns (PooledChunks with C = num_chunks, final-normed hidden [B, L, D] or None).
    """
    pooled = []
    banded = {} if band is None else dict(band=band, prefix=0)

    def attend(i: int, p: Projections):
        o = document_attention(p.q, p.k, p.v, segment_ids, **kernel_kwargs(cfg), **banded)
        if cfg.is_router_layer(i):
            pooled.append(tuple(pool_chunks(x, chunk_ids, num_chunks) for x in (p.kr, p.k, p.v)))
        return o, None

    h, _, _ = Transformer(cfg).apply({"params": params}, tokens, positions, attend)
    kr, k, v = (jnp.stack(xs) for xs in zip(*pooled))  # each [R, C, K, H]
    if cfg.msa.inference_cosine:  # the reference normalises K̄r at storage for cosine routing
        kr = l2_normalise(kr)
    return PooledChunks(kr, k, v), (h if collect_hidden else None)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _prefix_forward(cfg: ModelConfig, params, tokens: Array) -> KVCache:
    n = tokens.shape[1]
    cache = empty_cache(cfg, 1, n)
    k_time, q_time = step_times(cache.index, jnp.ones_like(tokens))
    _, cache, _ = forward_step(cfg, params, cache, tokens, jnp.arange(n)[None], k_time, q_time)
    return cache


def encode_prefix(cfg: ModelConfig, params) -> tuple[Array, Array]:
    """K/V of the fixed chat prefix at positions 0..Pf-1, every layer: two [L, Pf, K, H]."""
    ids = cfg.msa.prefix_token_ids
    if not ids:
        shape = (cfg.num_layers, 0, cfg.num_kv_heads, cfg.head_dim)
        return jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype)
    cache = _prefix_forward(cfg, params, jnp.asarray([ids], jnp.int32))
    return (jnp.stack([c.k[0] for c in cache.layers]), jnp.stack([c.v[0] for c in cache.layers]))
