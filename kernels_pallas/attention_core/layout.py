"""XLA-side layout of the shared attention kernels: GQA rows, key sets, per-block summaries.

The kernels work on *rows*: one row is one (query token, head of its GQA group) pair, so the G query
heads that share a KV head are one matrix and each K/V block is loaded once per group. A query row
carries (seg, pos); a key carries (seg, pos). Key j is visible to row i iff
    seg[j] == seg[i] >= 0  and  pos[j] <= pos[i].
document_attention uses seg = segment id, pos = index; sparse_memory_attention uses seg = 0 (or
-2 for an invalid slot), pos = time. A block of keys is skipped (not loaded) when its summary
(min/max segment, min position) cannot intersect the row block's (min/max segment, max position).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from kernels_pallas import common

INT_MAX = common.INVALID_TIME
INT_MIN = common.NEVER_TIME
PAD_SEG = -1  # padded query rows and padded keys: segment < 0 never matches


@dataclasses.dataclass(frozen=True)
class Rows:
    """Query rows. q [B, K, R, H]; seg, pos [B, R];
    summary (seg_min, seg_max, pos_max), each [B, R // block]."""

    q: jax.Array
    seg: jax.Array
    pos: jax.Array
    block: int
    summary: tuple
    num_tokens: int
    num_heads: int

    @property
    def num_blocks(self) -> int:
        return self.seg.shape[1] // self.block


def block_summary(seg: jax.Array, pos: jax.Array, block: int, pos_reduce: str) -> tuple:
    """(seg_min, seg_max, pos_min|pos_max) [B, n] over the valid (seg >= 0) entries of each block.
    A block without a valid entry gets seg_min > seg_max, so it intersects nothing."""
    b, n = seg.shape
    seg = seg.reshape(b, n // block, block)  # [B, n, block]
    pos = pos.reshape(b, n // block, block)
    valid = seg >= 0
    seg_min = jnp.min(jnp.where(valid, seg, INT_MAX), axis=-1)
    seg_max = jnp.max(jnp.where(valid, seg, -1), axis=-1)
    if pos_reduce == "min":
        pos_ext = jnp.min(jnp.where(valid, pos, INT_MAX), axis=-1)
    else:
        pos_ext = jnp.max(jnp.where(valid, pos, INT_MIN), axis=-1)
    return seg_min.astype(jnp.int32), seg_max.astype(jnp.int32), pos_ext.astype(jnp.int32)


def make_rows(q: jax.Array, seg: jax.Array, pos: jax.Array, num_kv_heads: int, block: int) -> Rows:
    """q [B, T, N, H], seg/pos [B, T] -> rows [B, K, R, H] with R = T*G rounded up to `block`."""
    b, t, n, h = q.shape
    g = n // num_kv_heads
    r = common.round_up(t * g, block)
    rows = q.reshape(b, t, num_kv_heads, g, h).transpose(0, 2, 1, 3, 4)  # [B, K, T, G, H]
    rows = common.pad_axis(rows.reshape(b, num_kv_heads, t * g, h), 2, r)  # [B, K, R, H]
    row_seg = common.pad_axis(jnp.repeat(seg.astype(jnp.int32), g, axis=1), 1, r, PAD_SEG)  # [B, R]
    row_pos = common.pad_axis(jnp.repeat(pos.astype(jnp.int32), g, axis=1), 1, r, INT_MIN)
    return Rows(rows, row_seg, row_pos, block, block_summary(row_seg, row_pos, block, "max"), t, n)


def rows_to_tokens(x: jax.Array, rows: Rows) -> jax.Array:
    """[B, K, R, ...] row values -> [B, T, N, ...] (drops padded rows)."""
    b, k = x.shape[:2]
    t, g = rows.num_tokens, rows.num_heads // k
    x = x[:, :, : t * g].reshape(b, k, t, g, *x.shape[3:])
    x = jnp.moveaxis(x, 2, 1)  # [B, T, K, G, ...]
    return x.reshape(b, t, rows.num_heads, *x.shape[4:])


@dataclasses.dataclass(frozen=True)
class KeySet:
    """Keys one kernel loop visits. seg, pos (and idx) are padded to Sp, a multiple of `block`.

    contiguous (idx is None): k, v [B, S, K, H], not padded (kernels mask rows >= S: `limit`);
      seg, pos [B, Sp] int32.
    gathered (paged): k, v [P, K, H], a pool; idx [B, Sp] int32 pool rows; seg, pos [B, Sp] per slot.
    lo, hi [B, NR]: the key blocks [lo, hi) each row block visits (forward and dq).
    row_lo, row_hi [B, NK]: the row blocks [row_lo, row_hi) each key block visits (dk/dv).
    summary: (seg_min, seg_max, pos_min), each [B, NK], over the valid keys of each block.
    """

    k: jax.Array
    v: jax.Array
    seg: jax.Array
    pos: jax.Array
    idx: Optional[jax.Array]
    block: int
    lo: jax.Array
    hi: jax.Array
    row_lo: jax.Array
    row_hi: jax.Array
    summary: tuple

    @property
    def gathered(self) -> bool:
        return self.idx is not None

    @property
    def limit(self):
        """Static row bound of a ragged contiguous set (None when no block is ragged)."""
        s = self.k.shape[1]
        return None if self.gathered or s % self.block == 0 else s

    @property
    def num_blocks(self) -> int:
        return self.seg.shape[1] // self.block


def make_keyset(
    k, v, seg, pos, *, block: int, rows: Rows, idx=None, lo=None, hi=None, row_lo=None, row_hi=None
) -> KeySet:
    """Pads the key metadata to a multiple of `block` (padded keys get segment -1, never visible; K/V
    stay unpadded) and summarises each block. Bounds left None mean "every block" (the in-kernel
    skip still applies)."""
    b, s = seg.shape
    sp = common.round_up(max(s, 1), block)
    seg = common.pad_axis(seg.astype(jnp.int32), 1, sp, PAD_SEG)
    pos = common.pad_axis(pos.astype(jnp.int32), 1, sp, INT_MAX)
    if idx is not None:
        idx = common.pad_axis(idx.astype(jnp.int32), 1, sp, 0)
    elif s == 0:  # no key at all: one zero row, masked out by its padded segment
        k, v = common.pad_axis(k, 1, 1), common.pad_axis(v, 1, 1)
    nk, nr = sp // block, rows.num_blocks

    def full(x, n, value):
        return jnp.full((b, n), value, jnp.int32) if x is None else x.astype(jnp.int32)

    return KeySet(
        k,
        v,
        seg,
        pos,
        idx,
        block,
        full(lo, nr, 0),
        full(hi, nr, nk),
        full(row_lo, nk, 0),
        full(row_hi, nk, nr),
        block_summary(seg, pos, block, "min"),
    )
