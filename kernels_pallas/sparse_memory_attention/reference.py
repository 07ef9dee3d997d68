"""XLA reference of sparse_memory_attention (the default on CPU and the test oracle).

Queries attend to the union of (a) pooled chunks gathered from a pool through mem_idx and (b) local
K/V, with integer-time visibility. Both are mapped onto the shared (segment, position) form:
a visible key has segment 0 and position = its time; an invalid one has segment -2.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.attention_core import reference as core_reference

INVALID_SEG = -2


def query_metadata(q_time):
    """q_time [B, T] -> (seg, pos) [B, T]: every query row is real."""
    return jnp.zeros(q_time.shape, jnp.int32), q_time.astype(jnp.int32)


def local_metadata(local_time):
    """local_time [B, S] -> (seg, pos) [B, S]; INVALID_TIME slots are never visible."""
    seg = jnp.where(local_time == common.INVALID_TIME, INVALID_SEG, 0).astype(jnp.int32)
    return seg, local_time.astype(jnp.int32)


def memory_metadata(mem_valid, mem_time):
    """mem_valid [B, Sm] bool, mem_time [B] -> (seg, pos) [B, Sm]: a memory slot is visible to query
    i iff it is valid and mem_time[b] <= q_time[b, i]."""
    seg = jnp.where(mem_valid, 0, INVALID_SEG).astype(jnp.int32)
    pos = jnp.broadcast_to(mem_time.astype(jnp.int32)[:, None], mem_valid.shape)
    return seg, pos


def sparse_memory_attention(
    q,
    q_time,
    local_k,
    local_v,
    local_time,
    mem_k=None,
    mem_v=None,
    mem_idx=None,
    mem_valid=None,
    mem_time=None,
    *,
    scale: float,
):
    """q [B, T, N, H]; local_k/v [B, S, K, H]; mem_k/v [P, K, H], mem_idx/mem_valid [B, Sm],
    mem_time [B] (all five or none) -> [B, T, N, H] in q.dtype."""
    q_seg, q_pos = query_metadata(q_time)
    k_seg, k_pos = local_metadata(local_time)
    k, v = local_k, local_v
    if mem_k is not None:
        m_seg, m_pos = memory_metadata(mem_valid, mem_time)
        k = jnp.concatenate([mem_k[mem_idx], k], axis=1)  # [B, Sm + S, K, H]
        v = jnp.concatenate([mem_v[mem_idx], v], axis=1)
        k_seg = jnp.concatenate([m_seg, k_seg], axis=1)  # [B, Sm + S]
        k_pos = jnp.concatenate([m_pos, k_pos], axis=1)
    return core_reference.masked_attention(q, q_seg, q_pos, k, v, k_seg, k_pos, scale=scale)
