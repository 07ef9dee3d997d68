"""custom_vjp of the shared Pallas attention: forward, dq, and dk/dv per key set.

`attention(...)` is what sparse_memory_attention and document_attention lower to. Key sets are
dicts of arrays: k, v, seg, pos and optionally idx (gathered from a pool) and the loop bounds
lo, hi [B, NR] / row_lo, row_hi [B, NK] (see layout.make_keyset). Gradients flow to q and to each
set's k and v; a gathered set's per-slot gradients are scatter-added into its pool.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.attention_core import key_pass
from kernels_pallas.attention_core import layout
from kernels_pallas.attention_core import row_pass

BOUND_NAMES = ("lo", "hi", "row_lo", "row_hi")


@dataclasses.dataclass(frozen=True)
class Config:
    scale: float
    num_kv_heads: int
    row_block: int
    key_blocks: tuple
    interpret: bool


def _pad_head(x):
    """Triton loads need a power-of-two head dim: zero-pad H (dot products are unchanged)."""
    return common.pad_axis(x, x.ndim - 1, common.next_pow2(x.shape[-1]))


def _build(cfg: Config, q, q_seg, q_pos, key_inputs):
    rows = layout.make_rows(_pad_head(q), q_seg, q_pos, cfg.num_kv_heads, cfg.row_block)
    keysets = []
    for ks, block in zip(key_inputs, cfg.key_blocks):
        bounds = {n: ks.get(n) for n in BOUND_NAMES}
        keysets.append(
            layout.make_keyset(
                _pad_head(ks["k"]),
                _pad_head(ks["v"]),
                ks["seg"],
                ks["pos"],
                block=block,
                rows=rows,
                idx=ks.get("idx"),
                **bounds,
            )
        )
    return rows, keysets


def _forward(cfg: Config, q, q_seg, q_pos, key_inputs):
    rows, keysets = _build(cfg, q, q_seg, q_pos, key_inputs)
    out_rows, lse = row_pass.row_pass(
        rows, keysets, scale=cfg.scale, mode="fwd", interpret=cfg.interpret
    )
    out = layout.rows_to_tokens(out_rows, rows)[..., : q.shape[-1]]  # [B, T, N, H]
    return out, (out_rows, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(cfg: Config, q, q_seg, q_pos, key_inputs):
    return _forward(cfg, q, q_seg, q_pos, key_inputs)[0]


def _attention_fwd(cfg, q, q_seg, q_pos, key_inputs):
    out, (out_rows, lse) = _forward(cfg, q, q_seg, q_pos, key_inputs)
    return out, (q, q_seg, q_pos, key_inputs, out_rows, lse)


def _key_grads(cfg, rows, keys: layout.KeySet, ks: dict, do_rows, lse, delta):
    """(dk, dv) shaped like ks["k"], ks["v"]."""
    gathered = keys.gathered
    dk, dv = key_pass.key_pass(
        rows,
        keys,
        do_rows,
        lse,
        delta,
        scale=cfg.scale,
        interpret=cfg.interpret,
        grad_dtype=jnp.float32 if gathered else ks["k"].dtype,
    )
    s, h = ks["seg"].shape[1], ks["k"].shape[-1]
    dk, dv = dk[:, :s, :, :h], dv[:, :s, :, :h]  # [B, S, K, H]
    if not gathered:
        return dk, dv.astype(ks["v"].dtype)
    # Paged memory: per-slot gradients scatter-add into the pool rows they were read from.
    idx = ks["idx"]  # [B, S]
    pool = lambda g, like: jnp.zeros(like.shape, jnp.float32).at[idx].add(g).astype(like.dtype)
    return pool(dk, ks["k"]), pool(dv, ks["v"])


def _attention_bwd(cfg, residuals, g):
    q, q_seg, q_pos, key_inputs, out_rows, lse = residuals
    rows, keysets = _build(cfg, q, q_seg, q_pos, key_inputs)
    do_rows = layout.make_rows(
        _pad_head(g.astype(q.dtype)), q_seg, q_pos, cfg.num_kv_heads, cfg.row_block
    ).q  # [B, K, R, H]
    delta = jnp.sum(
        do_rows.astype(jnp.float32) * out_rows.astype(jnp.float32), axis=-1
    )  # [B, K, R]
    dq_rows = row_pass.row_pass(
        rows,
        keysets,
        scale=cfg.scale,
        mode="dq",
        interpret=cfg.interpret,
        do=do_rows,
        lse=lse,
        delta=delta,
    )
    dq = layout.rows_to_tokens(dq_rows, rows)[..., : q.shape[-1]]
    key_cts = []
    for keys, ks in zip(keysets, key_inputs):
        dk, dv = _key_grads(cfg, rows, keys, ks, do_rows, lse, delta)
        key_cts.append({n: (dk if n == "k" else dv if n == "v" else None) for n in ks})
    return dq, None, None, tuple(key_cts)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(
    q,
    q_seg,
    q_pos,
    key_inputs: Sequence[dict],
    *,
    scale: float,
    row_block: int,
    key_blocks: Sequence[int],
    interpret: bool,
):
    """q [B, T, N, H]; q_seg, q_pos [B, T] int32; key sets as in the module docstring.
    Returns [B, T, N, H] in q.dtype. Row/key blocks are powers of two (>= 16 for tensor cores)."""
    num_kv_heads = key_inputs[0]["k"].shape[-2]
    cfg = Config(float(scale), num_kv_heads, row_block, tuple(key_blocks), bool(interpret))
    return _attention(cfg, q, q_seg, q_pos, tuple(dict(ks) for ks in key_inputs))
