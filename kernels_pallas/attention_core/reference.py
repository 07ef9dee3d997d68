"""XLA reference of the shared attention: masked softmax attention with (segment, position) keys.

Key j is visible to query i iff k_seg[j] == q_seg[i] >= 0 and k_pos[j] <= q_pos[i]; a query with no
visible key outputs zeros. Long query axes are processed in chunks of `block_q` (lax.map with
rematerialisation), so neither the forward nor jax.grad of it holds [B, N, T, S] scores at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kernels_pallas import common


def _precision(dtype):
    """Full precision for float32/float64 matmuls; bfloat16/float16 ones run at their own."""
    wide = jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))
    return lax.Precision.HIGHEST if wide else lax.Precision.DEFAULT


def attend_chunk(q, q_seg, q_pos, k, v, k_seg, k_pos, scale):
    """q [B, T, N, H]; k, v [B, S, K, H]; metadata int32 -> [B, T, N, H] in
    common.accum_dtype(q.dtype) (float32, or float64 for float64 inputs).

    Batched 3-D matmuls over (batch, KV head) with the G query heads of a group stacked along the
    rows: a 5-D einsum here ran ~3x slower on XLA:CPU."""
    b, t, n, h = q.shape
    s_len, kh = k.shape[1], k.shape[2]
    g = n // kh
    prec = _precision(q.dtype)
    acc = common.accum_dtype(q.dtype)
    qg = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b * kh, g * t, h)  # [BK, GT, H]
    kt = k.transpose(0, 2, 3, 1).reshape(b * kh, h, s_len)  # [BK, H, S]
    s = jnp.matmul(qg, kt, precision=prec, preferred_element_type=acc) * scale
    s = s.reshape(b, kh, g, t, s_len)  # [B, K, G, T, S]
    visible = (
        (k_seg[:, None, :] == q_seg[:, :, None])
        & (q_seg[:, :, None] >= 0)
        & (k_pos[:, None, :] <= q_pos[:, :, None])
    )  # [B, T, S]
    visible = visible[:, None, None]  # [B, 1, 1, T, S]
    s = jnp.where(visible, s, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # rows with nothing visible
    p = jnp.exp(s - m)  # [B, K, G, T, S]; 0 where masked
    denom = jnp.sum(p, axis=-1).reshape(b * kh, g * t, 1)
    vt = v.astype(acc).transpose(0, 2, 1, 3).reshape(b * kh, s_len, h)  # [BK, S, H]
    out = jnp.matmul(p.reshape(b * kh, g * t, s_len), vt, precision=lax.Precision.HIGHEST)
    out = out / jnp.where(denom > 0, denom, 1.0)  # normalise after P.V: [BK, GT, H]
    return out.reshape(b, kh, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def masked_attention(q, q_seg, q_pos, k, v, k_seg, k_pos, *, scale: float, block_q: int = 512):
    """q [B, T, N, H]; q_seg, q_pos [B, T]; k, v [B, S, K, H]; k_seg, k_pos [B, S] -> [B, T, N, H]
    in q.dtype (accumulated in common.accum_dtype(q.dtype): float32, or float64)."""
    t = q.shape[1]
    if t <= block_q:
        return attend_chunk(q, q_seg, q_pos, k, v, k_seg, k_pos, scale).astype(q.dtype)
    tp = common.round_up(t, block_q)
    nc = tp // block_q

    def chunks(x, fill):  # [B, T, ...] -> [nc, B, block_q, ...]
        x = common.pad_axis(x, 1, tp, fill)
        return jnp.moveaxis(x.reshape(x.shape[0], nc, block_q, *x.shape[2:]), 1, 0)

    @jax.checkpoint
    def one(args):
        qc, sc, pc = args
        return attend_chunk(qc, sc, pc, k, v, k_seg, k_pos, scale)

    out = lax.map(one, (chunks(q, 0), chunks(q_seg, -1), chunks(q_pos, 0)))  # [nc, B, bq, N, H]
    out = jnp.moveaxis(out, 0, 1).reshape(q.shape[0], tp, *q.shape[2:])
    return out[:, :t].astype(q.dtype)
