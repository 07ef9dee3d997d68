"""XLA reference of document_attention (the default on CPU and the test oracle).

Packed documents: token i attends to token j iff segment_ids[j] == segment_ids[i] >= 0 and j <= i.
Mapped onto the shared (segment, position) form with position = index in the packed sequence.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels_pallas.attention_core import reference as core_reference


def metadata(segment_ids):
    """segment_ids [B, L] -> (seg, pos) [B, L] int32, pos = index."""
    b, l = segment_ids.shape
    return segment_ids.astype(jnp.int32), jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))


def document_attention(q, k, v, segment_ids, *, scale: float, block_q: int = 512):
    """q [B, L, N, H]; k, v [B, L, K, H]; segment_ids [B, L] -> [B, L, N, H] in q.dtype.
    Queries are processed `block_q` at a time (bounded memory, rematerialised under jax.grad)."""
    seg, pos = metadata(segment_ids)
    return core_reference.masked_attention(
        q, seg, pos, k, v, seg, pos, scale=scale, block_q=block_q
    )
