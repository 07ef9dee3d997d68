"""Mean pooling of per-token tensors into chunks of P tokens (docs/msa.md §3).

Which chunk a token belongs to is decided by the caller (`chunk_ids`, -1 for tokens that pool into
nothing); a document's last chunk may be partial and averages only its own tokens. Accumulates in
accum_dtype(x.dtype): float32, or float64 for float64 inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas.common import accum_dtype

Array = jax.Array


def pool_chunks(x: Array, chunk_ids: Array, num_chunks: int) -> Array:
    """x [B, L, ...], chunk_ids [B, L] int32 (ids < num_chunks; -1 = none) -> [num_chunks, ...]
    means in accum_dtype(x.dtype); a chunk no token maps to is zero."""
    flat = x.reshape((-1,) + x.shape[2:]).astype(accum_dtype(x.dtype))  # [B*L, ...]
    ids = chunk_ids.reshape(-1)
    ids = jnp.where(ids < 0, num_chunks, ids)  # send "none" to an overflow bucket
    sums = jax.ops.segment_sum(flat, ids, num_segments=num_chunks + 1)[:num_chunks]
    counts = jax.ops.segment_sum(jnp.ones_like(ids, flat.dtype), ids,
                                 num_segments=num_chunks + 1)[:num_chunks]
    counts = counts.reshape((num_chunks,) + (1,) * (flat.ndim - 1))
    return sums / jnp.maximum(counts, 1.0)


def document_chunk_ids(segment_ids: Array, positions: Array, pool: int,
                       chunk_offset: Array) -> Array:
    """Chunk slot of each document token: chunk_offset[segment] + position // P.

    segment_ids [B, L] (document index into chunk_offset, < 0 for non-document tokens),
    positions [B, L] (document-wise, from 0) -> [B, L] int32, -1 for non-document tokens.
    """
    seg = jnp.maximum(segment_ids, 0)
    ids = chunk_offset[seg] + positions // pool
    return jnp.where(segment_ids >= 0, ids, -1).astype(jnp.int32)
