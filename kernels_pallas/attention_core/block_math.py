"""Per-block math shared by the forward, dq and dk/dv kernels (runs inside Pallas kernels).

Shapes: a row block is [br] rows, a key block [bk] keys, H the head dim. Everything accumulates in
float32; matmul inputs stay in the input dtype (bf16 tensor cores; float32 uses IEEE, not TF32).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

NEG_INF = float("-inf")


def precision_for(dtype) -> lax.Precision:
    # DEFAULT would make the Triton lowering use TF32 for float32 inputs.
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def _dot(a, b, contract, precision):
    return lax.dot_general(
        a, b, (contract, ((), ())), precision=precision, preferred_element_type=jnp.float32
    )


def dot_nt(a, b, precision):
    """a [m, d] . b [n, d]^T -> [m, n] float32."""
    return _dot(a, b, ((1,), (1,)), precision)


def dot_nn(a, b, precision):
    """a [m, d] . b [d, n] -> [m, n] float32."""
    return _dot(a, b, ((1,), (0,)), precision)


def dot_tn(a, b, precision):
    """a [d, m]^T . b [d, n] -> [m, n] float32."""
    return _dot(a, b, ((0,), (0,)), precision)


def visible(row_seg, row_pos, key_seg, key_pos):
    """[br], [br], [bk], [bk] int32 -> [br, bk] bool: key visible to row."""
    same = row_seg[:, None] == key_seg[None, :]
    return same & (row_seg[:, None] >= 0) & (key_pos[None, :] <= row_pos[:, None])


def blocks_intersect(row_summary, key_summary):
    """Scalar bool: may any key of the block be visible to any row of the block?
    row_summary (seg_min, seg_max, pos_max); key_summary (seg_min, seg_max, pos_min)."""
    r_smin, r_smax, r_pmax = row_summary
    k_smin, k_smax, k_pmin = key_summary
    return (k_smin <= r_smax) & (r_smin <= k_smax) & (k_pmin <= r_pmax)


def init_softmax_state(num_rows: int, head_dim: int):
    """(running max [br], running sum [br], accumulator [br, H]) float32."""
    return (
        jnp.full((num_rows,), NEG_INF, jnp.float32),
        jnp.zeros((num_rows,), jnp.float32),
        jnp.zeros((num_rows, head_dim), jnp.float32),
    )


def online_softmax_step(state, q, k, v, mask, scale, precision):
    """One key block of the forward: q [br, H], k/v [bk, H], mask [br, bk]."""
    m, l, acc = state
    s = jnp.where(mask, dot_nt(q, k, precision) * scale, NEG_INF)  # [br, bk]
    m_new = jnp.maximum(m, jnp.max(s, axis=1))  # [br]
    m_safe = jnp.where(m_new == NEG_INF, 0.0, m_new)
    alpha = jnp.exp(m - m_safe)  # [br], 0 while m = -inf
    p = jnp.exp(s - m_safe[:, None])  # [br, bk], 0 where masked
    l = alpha * l + jnp.sum(p, axis=1)
    acc = acc * alpha[:, None] + dot_nn(p.astype(v.dtype), v, precision)  # [br, H]
    return m_new, l, acc


def finish_softmax(state):
    """-> (out [br, H] float32, lse [br] float32). Rows with no visible key: out 0, lse 0."""
    m, l, acc = state
    seen = l > 0
    out = acc / jnp.where(seen, l, 1.0)[:, None]
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
    return out, lse


def probabilities(q, k, mask, lse, scale, precision):
    """Recomputed softmax probabilities [br, bk] float32 from the forward's lse [br]."""
    s = dot_nt(q, k, precision) * scale
    return jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)


def score_grad(p, do, v, delta, precision):
    """dS = P * (dO . V^T - delta): [br, bk] float32 (the softmax Jacobian applied to dO)."""
    return p * (dot_nt(do, v, precision) - delta[:, None])


def dq_step(dq, q, k, v, do, lse, delta, mask, scale, precision):
    """dq [br, H] += dS . K (scale applied by the caller once)."""
    p = probabilities(q, k, mask, lse, scale, precision)
    ds = score_grad(p, do, v, delta, precision)
    return dq + dot_nn(ds.astype(k.dtype), k, precision)


def dkv_step(state, q, k, v, do, lse, delta, mask, scale, precision):
    """(dk, dv) [bk, H] += (dS^T . Q, P^T . dO) (dk's scale applied by the caller once)."""
    dk, dv = state
    p = probabilities(q, k, mask, lse, scale, precision)  # [br, bk]
    dv = dv + dot_tn(p.astype(do.dtype), do, precision)
    ds = score_grad(p, do, v, delta, precision)
    dk = dk + dot_tn(ds.astype(q.dtype), q, precision)
    return dk, dv
