"""Pallas (Triton) sparse_memory_attention: the shared attention kernels with two key sets.

The memory key set is *gathered*: each program reads pool rows mem_k[mem_idx[b, j]] block by block
(paged-attention style; no dense mask over the pool, no gathered copy in HBM). The local key set is
contiguous. Blocks whose times cannot be visible to the row block are skipped in-kernel.
Backward kernels and the custom_vjp live in attention_core (vjp.py); this op's part of the wiring
is which inputs are key sets and that memory gradients scatter-add into the pool through mem_idx.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.attention_core import vjp
from kernels_pallas.sparse_memory_attention import reference

ROW_BLOCK, KEY_BLOCK, MEM_BLOCK = 64, 64, 32


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
    interpret: bool = False,
    row_block: int | None = None,
    key_block: int | None = None,
    mem_block: int | None = None,
):
    """Shapes as in reference.sparse_memory_attention. Differentiable in q, local_k/v, mem_k/v.
    Blocks (powers of two >= 16): row_block query rows ((token, head of the GQA group) pairs),
    key_block local keys, mem_block memory slots; None picks a default for the shapes."""
    b, t, n, _ = q.shape
    g = n // local_k.shape[2]
    row_block = row_block or common.block_size(t * g, ROW_BLOCK)
    key_block = key_block or common.block_size(local_k.shape[1], KEY_BLOCK)
    q_seg, q_pos = reference.query_metadata(q_time)
    seg, pos = reference.local_metadata(local_time)
    key_sets = [dict(k=local_k, v=local_v, seg=seg, pos=pos)]
    blocks = [key_block]
    if mem_k is not None:
        m_seg, m_pos = reference.memory_metadata(mem_valid, mem_time)
        # Invalid slots may hold any index (e.g. -1): point them at row 0 so no load leaves the pool.
        rows = jnp.clip(jnp.where(mem_valid, mem_idx, 0), 0, mem_k.shape[0] - 1).astype(jnp.int32)
        key_sets.insert(0, dict(k=mem_k, v=mem_v, seg=m_seg, pos=m_pos, idx=rows))
        blocks.insert(0, mem_block or common.block_size(mem_idx.shape[1], MEM_BLOCK))
    return vjp.attention(
        q,
        q_seg,
        q_pos,
        key_sets,
        scale=scale,
        row_block=row_block,
        key_blocks=blocks,
        interpret=interpret,
    )
