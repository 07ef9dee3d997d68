"""XLA reference of document_attention (the default on CPU and the test oracle).

Packed documents: token i attends to token j iff segment_ids[j] == segment_ids[i] >= 0 and j <= i.
Mapped onto the shared (segment, position) form with position = index in the packed sequence.

`banded_document_attention` is the same result in O(L·band) when the caller knows a static bound
on every segment's extent (see its docstring); the dense form is O(L²).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.attention_core import reference as core_reference


def metadata(segment_ids):
    """segment_ids [B, L] -> (seg, pos) [B, L] int32, pos = index."""
    b, l = segment_ids.shape
    return segment_ids.astype(jnp.int32), jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))


# Rows up to this many causal blocks are attended block by block, unrolled (more: lax.map).
_MAX_CAUSAL_BLOCKS = 16


def document_attention(q, k, v, segment_ids, *, scale: float, block_q: int = 512,
                       causal_block: int | None = 128):
    """q [B, L, N, H]; k, v [B, L, K, H]; segment_ids [B, L] -> [B, L, N, H] in q.dtype.

    Rows of at most 16 x `causal_block` tokens are attended `causal_block` queries at a time,
    each block against the keys up to its own last token only (later keys are masked anyway):
    ~half the scores of the dense square, and blocks of them that stay in cache (a 512-token
    row of the tiny-msa shapes: 0.86 ms against 1.66 ms in one pass, 2-core CPU). Longer rows,
    or causal_block=None: `block_q` queries at a time against every key (lax.map). Each block is
    rematerialised under jax.grad, so neither path holds a row's [B, N, L, L] scores at once."""
    seg, pos = metadata(segment_ids)
    length = q.shape[1]
    if causal_block is None or length > _MAX_CAUSAL_BLOCKS * causal_block:
        return core_reference.masked_attention(
            q, seg, pos, k, v, seg, pos, scale=scale, block_q=block_q
        )
    attend = jax.checkpoint(core_reference.attend_chunk, static_argnums=(7,))
    out = []
    for start in range(0, length, causal_block):
        end = min(start + causal_block, length)  # [start, end) queries, [0, end) keys
        out.append(attend(q[:, start:end], seg[:, start:end], pos[:, start:end], k[:, :end],
                          v[:, :end], seg[:, :end], pos[:, :end], scale))
    return jnp.concatenate(out, axis=1).astype(q.dtype)


def _band_keys(x, band: int, fill):
    """[B, nb * band, ...] -> [B, nb, 2 * band, ...]: block i's keys are blocks i - 1 and i."""
    xb = x.reshape(x.shape[0], x.shape[1] // band, band, *x.shape[2:])
    prev = jnp.concatenate([jnp.full_like(xb[:, :1], fill), xb[:, :-1]], axis=1)
    return jnp.concatenate([prev, xb], axis=2)


def banded_document_attention(q, k, v, segment_ids, *, scale: float, band: int, prefix: int = 0):
    """`document_attention` in O(L·(2·band + prefix)), for a caller who guarantees statically:
    any two tokens of one segment, the later at index i and the earlier at j >= prefix, have
    i - j < band (every segment spans fewer than `band` tokens, not counting its tokens among
    the first `prefix` of the row; 0 <= prefix <= band).

    Query block b (tokens [b·band, (b+1)·band)) then sees all its visible keys among key blocks
    b - 1 and b plus the row's first `prefix` keys (the latter already inside the band for
    b <= 1, so masked there to count once): exact, since every other key is masked anyway.
    Same shapes and result as `document_attention`; broken guarantees give wrong outputs.
    """
    seg, pos = metadata(segment_ids)
    b, l, n, h = q.shape
    kh = k.shape[2]
    lp = common.round_up(l, band)
    nb = lp // band
    seg, pos = common.pad_axis(seg, 1, lp, -1), common.pad_axis(pos, 1, lp, 0)
    qb = common.pad_axis(q, 1, lp, 0).reshape(b * nb, band, n, h)  # [B·nb, band, N, H]
    keys = [_band_keys(common.pad_axis(x, 1, lp, 0), band, 0) for x in (k, v)]  # [B,nb,2band,K,H]
    k_seg, k_pos = _band_keys(seg, band, -1), _band_keys(pos, band, 0)  # [B, nb, 2·band]
    if prefix:
        first = jnp.arange(nb) <= 1  # blocks whose band already holds the first `prefix` keys
        pre_seg = jnp.where(first[None, :, None], -1, seg[:, None, :prefix])  # [B, nb, prefix]
        k_seg = jnp.concatenate([k_seg, pre_seg], axis=2)
        k_pos = jnp.concatenate([k_pos, jnp.broadcast_to(pos[:, None, :prefix],
                                                         pre_seg.shape)], axis=2)
        keys = [jnp.concatenate([x, jnp.broadcast_to(y[:, None, :prefix],
                                                     (b, nb, prefix, kh, h))], axis=2)
                for x, y in zip(keys, (k, v))]
    s = k_seg.shape[2]
    kb, vb = (x.reshape(b * nb, s, kh, h) for x in keys)  # [B·nb, S, K, H]
    out = core_reference.masked_attention(
        qb, seg.reshape(b * nb, band), pos.reshape(b * nb, band), kb, vb,
        k_seg.reshape(b * nb, s), k_pos.reshape(b * nb, s), scale=scale, block_q=band)
    return out.reshape(b, lp, n, h)[:, :l]
