"""Pallas (Triton) document_attention: the shared attention kernels with per-block loop bounds.

Cost linear in the number of documents: a row block visits only the key blocks from the first
token of the earliest segment it holds up to its causal diagonal, and inside that range skips
(never loads) blocks whose segment range cannot meet its own. The dK/dV kernel mirrors this: a
key block visits the row blocks from its diagonal to the last token of the latest segment it holds.
The bounds come from one sort of the segment ids in XLA (segments need not be contiguous).
Backward kernels and the custom_vjp live in attention_core (vjp.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels_pallas import common
from kernels_pallas.attention_core import block_math
from kernels_pallas.attention_core import layout
from kernels_pallas.attention_core import vjp
from kernels_pallas.document_attention import reference

ROW_BLOCK, KEY_BLOCK = 64, 64
INT_MAX = common.INVALID_TIME


def segment_extents(seg):
    """seg [B, L] -> (first, last) [B, L] int32: index of the first/last token of each token's
    segment (meaningless where seg < 0). One stable sort by (segment, index)."""
    b, l = seg.shape
    index = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    key = jnp.where(seg >= 0, seg, INT_MAX).astype(jnp.int32)
    s_key, s_index = lax.sort((key, index), dimension=1, num_keys=2)  # [B, L]
    change = s_key[:, 1:] != s_key[:, :-1]  # [B, L-1]
    ones = jnp.ones((b, 1), bool)
    ar = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    start = lax.cummax(jnp.where(jnp.concatenate([ones, change], 1), ar, 0), axis=1)
    end = lax.cummin(jnp.where(jnp.concatenate([change, ones], 1), ar, l - 1), axis=1, reverse=True)
    rows = jnp.arange(b)[:, None]
    first = (
        jnp.zeros((b, l), jnp.int32).at[rows, s_index].set(jnp.take_along_axis(s_index, start, 1))
    )
    last = jnp.zeros((b, l), jnp.int32).at[rows, s_index].set(jnp.take_along_axis(s_index, end, 1))
    return first, last


def _blocked(x, size, block, fill):
    """[B, n] -> [B, size // block, block], padded with fill."""
    x = common.pad_axis(x, 1, size, fill)
    return x.reshape(x.shape[0], size // block, block)


def key_block_bounds(seg, first, group, row_block, key_block):
    """[lo, hi) key blocks for each row block [B, NR]. Rows are (token, head) pairs, G per token."""
    b, l = seg.shape
    r = common.round_up(l * group, row_block)
    token = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    per_row = lambda x, fill: _blocked(jnp.repeat(x, group, axis=1), r, row_block, fill)
    valid = per_row(seg, -1) >= 0  # [B, NR, br]
    earliest = jnp.min(jnp.where(valid, per_row(first, 0), INT_MAX), axis=-1)  # [B, NR]
    latest = jnp.max(jnp.where(valid, per_row(token, 0), -1), axis=-1)
    empty = latest < 0
    lo = jnp.where(empty, 0, earliest // key_block)
    hi = jnp.where(empty, 0, latest // key_block + 1)
    return lo.astype(jnp.int32), hi.astype(jnp.int32)


def row_block_bounds(seg, last, group, row_block, key_block):
    """[lo, hi) row blocks for each key block [B, NK]."""
    b, l = seg.shape
    s = common.round_up(l, key_block)
    token = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    valid = _blocked(seg, s, key_block, -1) >= 0  # [B, NK, bk]
    first_key = jnp.min(jnp.where(valid, _blocked(token, s, key_block, 0), INT_MAX), axis=-1)
    latest = jnp.max(jnp.where(valid, _blocked(last, s, key_block, 0), -1), axis=-1)  # [B, NK]
    empty = latest < 0
    lo = jnp.where(empty, 0, first_key * group // row_block)
    hi = jnp.where(empty, 0, (latest * group + group - 1) // row_block + 1)
    return lo.astype(jnp.int32), hi.astype(jnp.int32)


def document_attention(
    q,
    k,
    v,
    segment_ids,
    *,
    scale: float,
    interpret: bool = False,
    block_q: int | None = None,
    block_k: int | None = None,
):
    """q [B, L, N, H]; k, v [B, L, K, H]; segment_ids [B, L] -> [B, L, N, H] (q.dtype).
    block_q: query rows per block (a row is a (token, head of the GQA group) pair); block_k: keys."""
    b, l, n, _ = q.shape
    group = n // k.shape[2]
    block_q = block_q or common.block_size(l * group, ROW_BLOCK)
    block_k = block_k or common.block_size(l, KEY_BLOCK)
    seg, pos = reference.metadata(segment_ids)
    first, last = segment_extents(seg)
    lo, hi = key_block_bounds(seg, first, group, block_q, block_k)
    row_lo, row_hi = row_block_bounds(seg, last, group, block_q, block_k)
    keys = dict(k=k, v=v, seg=seg, pos=pos, lo=lo, hi=hi, row_lo=row_lo, row_hi=row_hi)
    return vjp.attention(
        q,
        seg,
        pos,
        [keys],
        scale=scale,
        row_block=block_q,
        key_blocks=[block_k],
        interpret=interpret,
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def visited_key_blocks(segment_ids, group: int, block_q: int, block_k: int):
    """[B] number of (row block, key block) pairs whose K/V the forward loads: the cost model
    (linear in the number of documents for documents of bounded length). A debugging aid."""
    seg, pos = reference.metadata(segment_ids)
    b, l = seg.shape
    lo, hi = key_block_bounds(seg, segment_extents(seg)[0], group, block_q, block_k)
    r, s = common.round_up(l * group, block_q), common.round_up(l, block_k)
    row_sum = layout.block_summary(
        common.pad_axis(jnp.repeat(seg, group, 1), 1, r, -1),
        common.pad_axis(jnp.repeat(pos, group, 1), 1, r, 0),
        block_q,
        "max",
    )  # [B, NR]
    key_sum = layout.block_summary(
        common.pad_axis(seg, 1, s, -1), common.pad_axis(pos, 1, s, INT_MAX), block_k, "min"
    )  # [B, NK]
    meets = block_math.blocks_intersect(
        [x[:, :, None] for x in row_sum], [x[:, None, :] for x in key_sum]
    )  # [B, NR, NK]
    j = jnp.arange(s // block_k)[None, None, :]
    in_range = (j >= lo[:, :, None]) & (j < hi[:, :, None])
    return jnp.sum(meets & in_range, axis=(1, 2))
