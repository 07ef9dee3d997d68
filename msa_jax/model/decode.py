"""The cached forward: prefill of a plain prompt and every decode step (docs/msa.md §4 "Decode").

New tokens' K/V are written into the cache at `cache.index`; every query attends to the cache
slots visible at its time plus, in router layers of an MSA model, the frozen memory chunks.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from kernels_pallas import sparse_memory_attention
from msa_jax.config import ModelConfig
from msa_jax.model.cache import KVCache, LayerCache, MemoryKV
from msa_jax.model.transformer import Projections, Transformer

Array = jax.Array
ALWAYS = -(2**30)  # a memory time every query time exceeds


def kernel_kwargs(cfg: ModelConfig) -> dict:
    return dict(scale=cfg.head_dim ** -0.5, implementation=cfg.kernel_implementation,
                interpret=cfg.kernel_interpret)


def memory_args(memory: MemoryKV | None) -> dict:
    """MemoryKV [B, Sm, K, H] -> the pool/index arguments of sparse_memory_attention."""
    if memory is None:
        return {}
    b, sm, kh, h = memory.content_k.shape
    idx = jnp.arange(b * sm, dtype=jnp.int32).reshape(b, sm)  # row b reads its own Sm chunks
    return dict(mem_k=memory.content_k.reshape(b * sm, kh, h),
                mem_v=memory.content_v.reshape(b * sm, kh, h),
                mem_idx=idx, mem_valid=memory.valid,
                mem_time=jnp.full((b,), ALWAYS, jnp.int32))


def write_slots(buf: Array, new: Array, index: Array) -> Array:
    """Write new [B, T, ...] into buf [B, S, ...] at slot `index`."""
    start = (0, index) + (0,) * (buf.ndim - 2)
    return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), start)


# route(layer, projections) -> (MemoryKV for this router layer, routing info): picks the memory a
# router layer attends to at prefill (model/query.py). Without it, layers keep the cache's memory.
Route = Callable[[int, Projections], tuple[MemoryKV, Any]]


def forward_step(cfg: ModelConfig, params, cache: KVCache, tokens: Array, positions: Array,
                 k_time: Array, q_time: Array, route: Route | None = None,
                 collect_hidden: bool = False):
    """tokens, positions, k_time, q_time [B, T] -> (hidden [B, T, D], new cache, extras).

    The caller makes the times (model/cache.py `step_times`); T may be 1 (decode) or a prompt.
    `extras` = (routing info per layer (None where not routed), hidden states or None).
    """
    model = Transformer(cfg)
    time = write_slots(cache.time, k_time, cache.index)  # [B, S]

    def attend(i: int, p: Projections):
        layer = cache.layers[i]
        k = write_slots(layer.k, p.k, cache.index)  # [B, S, K, H]
        v = write_slots(layer.v, p.v, cache.index)
        memory, info = layer.memory, None
        if route is not None and cfg.is_router_layer(i):
            memory, info = route(i, p)
        o = sparse_memory_attention(p.q, q_time, k, v, time, **memory_args(memory),
                                    **kernel_kwargs(cfg))
        return o, (LayerCache(k, v, memory), info)

    h, extras, hidden = model.apply({"params": params}, tokens, positions, attend,
                                    collect_hidden=collect_hidden)
    layers = tuple(e[0] for e in extras)
    infos = tuple(e[1] for e in extras)
    new_cache = KVCache(layers, time, cache.index + tokens.shape[1])
    return h, new_cache, (infos, hidden)


def logits_of(cfg: ModelConfig, params, h: Array) -> Array:
    """Final-normed hidden [B, T, D] -> logits [B, T, V] in accum_dtype(cfg.dtype): float32, or
    float64 for a float64 model."""
    return Transformer(cfg).apply({"params": params}, h, method=Transformer.logits)
