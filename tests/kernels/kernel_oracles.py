"""Independent oracles, written straight from SPEC.md and sharing no code with kernels_pallas:
naive float64 numpy versions of the three ops, and a plain dense masked attention in JAX whose
jax.grad is the gradient oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

INVALID_TIME = np.iinfo(np.int32).max


# ----------------------------------------------------------------------------- visibility


def memory_keys(local_k, local_v, mem):
    """Concatenates gathered memory (if any) before the local keys: [B, Sm + S, K, H]."""
    if mem is None:
        return local_k, local_v
    rows = np.asarray(mem["mem_idx"])
    mk, mv = np.asarray(mem["mem_k"])[rows], np.asarray(mem["mem_v"])[rows]
    return np.concatenate([mk, np.asarray(local_k)], 1), np.concatenate(
        [mv, np.asarray(local_v)], 1
    )


def time_visibility(q_time, local_time, mem):
    """[B, T, Sm + S] bool, from SPEC §2."""
    q_time, local_time = np.asarray(q_time, np.int64), np.asarray(local_time, np.int64)
    vis = (local_time[:, None, :] <= q_time[:, :, None]) & (local_time[:, None, :] != INVALID_TIME)
    if mem is None:
        return vis
    mem_vis = np.asarray(mem["mem_valid"])[:, None, :] & (
        np.asarray(mem["mem_time"], np.int64)[:, None, None] <= q_time[:, :, None]
    )
    return np.concatenate([mem_vis, vis], axis=2)


def document_visibility(segment_ids):
    """[B, L, L] bool, from SPEC §3."""
    seg = np.asarray(segment_ids)
    l = seg.shape[1]
    causal = np.arange(l)[None, :] <= np.arange(l)[:, None]  # [i, j]: j <= i
    return (seg[:, None, :] == seg[:, :, None]) & (seg[:, :, None] >= 0) & causal[None]


# ----------------------------------------------------------------------------- float64 numpy


def np_attention(q, k, v, visible, scale):
    """q [B, T, N, H], k/v [B, S, K, H], visible [B, T, S] -> float64 [B, T, N, H]."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)  # [B, S, N, H]
    s = np.einsum("btnh,bsnh->bnts", q, k) * scale
    vis = visible[:, None]
    s = np.where(vis, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    p = np.where(vis, np.exp(s - np.where(np.isfinite(m), m, 0)), 0.0)
    denom = p.sum(-1, keepdims=True)
    p = p / np.where(denom > 0, denom, 1)
    return np.einsum("bnts,bsnh->btnh", p, v)


def np_routing_doc_scores(
    qr, q_mask, kr, chunk_doc, num_docs, similarity, scale, head_reduce, query_reduce, chunk_reduce
):
    """[B, M] float64, per SPEC §1: per (b, t, n, c) scores, then heads, tokens, chunks."""
    qr, kr = np.asarray(qr, np.float64), np.asarray(kr, np.float64)
    n, kh = qr.shape[2], kr.shape[1]
    kr_n = np.repeat(kr, n // kh, axis=1)  # [C, N, H]
    if similarity == "cosine":
        qr = qr / np.maximum(np.linalg.norm(qr, axis=-1, keepdims=True), 1e-6)
        kr_n = kr_n / np.maximum(np.linalg.norm(kr_n, axis=-1, keepdims=True), 1e-6)
        scale = 1.0
    s = np.einsum("btnh,cnh->btnc", qr, kr_n) * scale  # [B, T, N, C]
    s = s.mean(axis=2) if head_reduce == "mean" else s.max(axis=2)  # [B, T, C]
    mask = np.asarray(q_mask)
    out = np.full((qr.shape[0], num_docs), -np.inf)
    doc = np.asarray(chunk_doc)
    for b in range(qr.shape[0]):
        if not mask[b].any():
            continue
        tok = s[b][mask[b]]  # [t', C]
        chunk = tok.max(axis=0) if query_reduce == "max" else tok.mean(axis=0)
        for m in range(num_docs):
            if (doc == m).any():
                out[b, m] = (
                    chunk[doc == m].max() if chunk_reduce == "max" else chunk[doc == m].mean()
                )
    return out


# ----------------------------------------------------------------------------- dense JAX (grads)


def dense_attention(q, k, v, visible, scale):
    """Plain dense masked attention in float32: q [B, T, N, H], k/v [B, S, K, H], visible [B, T, S].
    Rows with nothing visible give zeros. Its jax.grad is the gradient oracle."""
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    g = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
    s = jnp.einsum("btnh,bsnh->bnts", q, k, precision="highest") * scale
    vis = jnp.asarray(visible)[:, None]
    p = jax.nn.softmax(jnp.where(vis, s, -1e30), axis=-1) * vis
    return jnp.einsum("bnts,bsnh->btnh", p, v, precision="highest")
