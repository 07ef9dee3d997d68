"""Key-centric Pallas kernel of the backward: dK and dV of one key set.

One program owns a block of keys of one (batch, KV head) (a gathered set: a block of memory slots,
read from the pool through idx) and loops over the row blocks in [row_lo, row_hi), skipping row
blocks whose summary cannot intersect the key block. Gradients come back per key slot
[B, S, K, H]; for a gathered set the caller scatter-adds them into the pool.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels_pallas import common
from kernels_pallas.attention_core import block_math as bm
from kernels_pallas.attention_core import layout
from kernels_pallas.attention_core import specs

NUM_WARPS, NUM_STAGES = 4, 2


def _key_kernel(*all_refs, names, gathered, limit, block, row_block, scale):
    refs = dict(zip(names, all_refs))
    j = pl.program_id(2)
    if gathered:
        slots = refs["idx"][...]  # [bk] pool rows
        k, v = refs["k"][slots, :], refs["v"][slots, :]  # [bk, H]
    else:  # rows >= limit read as 0
        k = common.load_rows(refs["k"], j * block, block, limit)
        v = common.load_rows(refs["v"], j * block, block, limit)
    key_seg, key_pos = refs["seg"][...], refs["pos"][...]  # [bk]
    key_summary = tuple(refs[n][j] for n in ("smin", "smax", "pmin"))
    precision = bm.precision_for(k.dtype)

    def visit_rows(i, state):
        sl = pl.ds(i * row_block, row_block)
        q, do = refs["q"][sl, :], refs["do"][sl, :]  # [br, H]
        lse, delta = refs["lse"][sl], refs["delta"][sl]  # [br]
        mask = bm.visible(refs["row_seg"][sl], refs["row_pos"][sl], key_seg, key_pos)  # [br, bk]
        return bm.dkv_step(state, q, k, v, do, lse, delta, mask, scale, precision)

    def body(i, state):
        row_summary = tuple(refs[n][i] for n in ("row_smin", "row_smax", "row_pmax"))
        return lax.cond(
            bm.blocks_intersect(row_summary, key_summary),
            functools.partial(visit_rows, i),
            lambda s: s,
            state,
        )

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(refs["row_lo"][j], refs["row_hi"][j], body, (zeros, zeros))
    refs["dk"][...] = (dk * scale).astype(refs["dk"].dtype)
    refs["dv"][...] = dv.astype(refs["dv"].dtype)


def key_pass(
    rows: layout.Rows,
    keys: layout.KeySet,
    do,
    lse,
    delta,
    *,
    scale: float,
    interpret: bool,
    grad_dtype,
):
    """do [B, K, R, H], lse/delta [B, K, R] -> (dk, dv) [B, S, K, H] in grad_dtype, per key slot."""
    b, kh, r, h = rows.q.shape
    bk = keys.block
    operands = specs.whole_row_operands(
        [
            ("q", rows.q),
            ("do", do),
            ("lse", lse),
            ("delta", delta),
            ("row_seg", rows.seg),
            ("row_pos", rows.pos),
        ]
        + list(zip(("row_smin", "row_smax", "row_pmax"), rows.summary))
    )
    key_block = lambda b_, h_, j: (b_, j)  # [B, S] -> [bk]
    operands += specs.kv_whole_operands(keys, "")  # [P, H] pool or [S, H]
    if keys.gathered:
        operands.append(specs.Operand("idx", keys.idx, pl.BlockSpec((None, bk), key_block)))
    operands += [
        specs.Operand("seg", keys.seg, pl.BlockSpec((None, bk), key_block)),
        specs.Operand("pos", keys.pos, pl.BlockSpec((None, bk), key_block)),
    ]
    per_key_block = (*keys.summary, keys.row_lo, keys.row_hi)  # [B, NK] each
    operands += [
        specs.per_batch_operand(n, x)
        for n, x in zip(("smin", "smax", "pmin", "row_lo", "row_hi"), per_key_block)
    ]
    names, args, in_specs = specs.call_args(operands)

    s = keys.seg.shape[1]
    out_spec = pl.BlockSpec((None, bk, None, h), lambda b_, h_, j: (b_, j, h_, 0))
    out_shape = jax.ShapeDtypeStruct((b, s, kh, h), grad_dtype)
    kernel = functools.partial(
        _key_kernel,
        names=tuple(names) + ("dk", "dv"),
        gathered=keys.gathered,
        limit=keys.limit,
        block=bk,
        row_block=rows.block,
        scale=scale,
    )
    dk, dv = pl.pallas_call(
        kernel,
        grid=(b, kh, keys.num_blocks),
        in_specs=in_specs,
        out_specs=(out_spec, out_spec),
        out_shape=(out_shape, out_shape),
        compiler_params=common.compiler_params(NUM_WARPS, NUM_STAGES),
        interpret=interpret,
        name="msa_attention_dkv",
    )(*args)
    return dk, dv
