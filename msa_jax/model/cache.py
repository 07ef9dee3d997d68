"""The KV cache of the decode forward.

Slots are shared by all layers: `time` [B, S] says when each slot became visible (kernels'
`INVALID_TIME` = empty or masked), `index` is the next free slot. Router layers of an MSA model also
hold `memory`: the pooled K/V of the chunks their top-k documents contributed at prefill, frozen for
the rest of decoding (docs/msa.md §4, "Decode").
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from kernels_pallas import INVALID_TIME
from kernels_pallas.common import next_pow2
from msa_jax.config import ModelConfig

Array = jax.Array


@flax.struct.dataclass
class MemoryKV:
    """The content tier's chunks a router layer attends to: content_k (K̄), content_v (V̄)
    [B, Sm, K, H]; valid [B, Sm] bool."""

    content_k: Array
    content_v: Array
    valid: Array


@flax.struct.dataclass
class LayerCache:
    k: Array  # [B, S, K, H]
    v: Array  # [B, S, K, H]
    memory: MemoryKV | None = None


@flax.struct.dataclass
class KVCache:
    layers: tuple[LayerCache, ...]
    time: Array  # [B, S] int32
    index: Array  # [] int32: next free slot

    @property
    def batch(self) -> int:
        return self.time.shape[0]

    @property
    def capacity(self) -> int:
        return self.time.shape[1]


def empty_cache(cfg: ModelConfig, batch: int, capacity: int, dtype=None) -> KVCache:
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (batch, capacity, cfg.num_kv_heads, cfg.head_dim)
    layers = tuple(LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
                   for _ in range(cfg.num_layers))
    return KVCache(layers, jnp.full((batch, capacity), INVALID_TIME, jnp.int32),
                   jnp.zeros((), jnp.int32))


def step_times(index: Array, mask: Array, bidirectional: bool = False) -> tuple[Array, Array]:
    """Visibility times for T new tokens written at slots index..index+T-1.

    mask [B, T] (0 = a masked token: its key is never visible). Returns (key_time, query_time),
    each [B, T] int32. Causal: a token's time is its slot. Bidirectional: every token of the block
    gets the block's last slot, so the block's tokens see each other (the reference's decode quirk).
    """
    b, t = mask.shape
    slots = index + jnp.arange(t, dtype=jnp.int32)[None, :]  # [1, T]
    if bidirectional:
        slots = jnp.full_like(slots, index + t - 1)
    q_time = jnp.broadcast_to(slots, (b, t)).astype(jnp.int32)
    k_time = jnp.where(mask.astype(bool), q_time, INVALID_TIME).astype(jnp.int32)
    return k_time, q_time


def grow_cache(cache: KVCache, extra: int) -> KVCache:
    """The cache, with room for `extra` more slots after `index` (a padded copy if needed)."""
    need = int(cache.index) + extra
    if need <= cache.capacity:
        return cache
    pad = next_pow2(need) - cache.capacity  # a power of two: few shapes

    def grow(x, fill=0):
        widths = [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
        return jnp.pad(x, widths, constant_values=fill)

    layers = tuple(layer.replace(k=grow(layer.k), v=grow(layer.v)) for layer in cache.layers)
    return cache.replace(layers=layers, time=grow(cache.time, INVALID_TIME))
