"""Row-centric Pallas kernel: the forward (online softmax) and the dq backward share it.

One program owns a block of query rows of one (batch, KV head) and loops over the blocks of each
key set in turn (gathered memory first, then contiguous keys), skipping (never loading) key blocks
whose summary cannot intersect the row block and visiting only the blocks in [lo, hi).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels_pallas import common
from kernels_pallas.attention_core import block_math as bm
from kernels_pallas.attention_core import layout
from kernels_pallas.attention_core import specs

NUM_WARPS, NUM_STAGES = 4, 2


def load_key_block(refs, prefix: str, j, block: int, gathered: bool, limit):
    """Key block j of a key set: k, v [bk, H], seg, pos [bk]. A gathered set reads pool rows; a
    ragged contiguous set reads rows >= limit as 0 (their seg is -1: never visible)."""
    sl = pl.ds(j * block, block)
    seg, pos = refs[prefix + "seg"][sl], refs[prefix + "pos"][sl]
    if gathered:
        rows = refs[prefix + "idx"][sl]  # [bk] pool rows (paged gather)
        return refs[prefix + "k"][rows, :], refs[prefix + "v"][rows, :], seg, pos
    k = common.load_rows(refs[prefix + "k"], j * block, block, limit)
    return k, common.load_rows(refs[prefix + "v"], j * block, block, limit), seg, pos


def _row_kernel(*all_refs, names, keysets, mode, scale):
    refs = dict(zip(names, all_refs))
    i = pl.program_id(2)
    q = refs["q"][...]  # [br, H]
    row_seg, row_pos = refs["row_seg"][...], refs["row_pos"][...]  # [br]
    row_summary = tuple(refs[n][i] for n in ("row_smin", "row_smax", "row_pmax"))
    precision = bm.precision_for(q.dtype)
    if mode == "fwd":
        state = bm.init_softmax_state(*q.shape)
    else:
        do, lse, delta = refs["do"][...], refs["lse"][...], refs["delta"][...]
        state = jnp.zeros(q.shape, jnp.float32)  # dq [br, H]

    for prefix, block, gathered, limit in keysets:

        def visit_block(j, state, prefix=prefix, block=block, gathered=gathered, limit=limit):
            k, v, key_seg, key_pos = load_key_block(refs, prefix, j, block, gathered, limit)
            mask = bm.visible(row_seg, row_pos, key_seg, key_pos)  # [br, bk]
            if mode == "fwd":
                return bm.online_softmax_step(state, q, k, v, mask, scale, precision)
            return bm.dq_step(state, q, k, v, do, lse, delta, mask, scale, precision)

        def body(j, state, prefix=prefix, visit_block=visit_block):
            key_summary = tuple(refs[prefix + n][j] for n in ("smin", "smax", "pmin"))
            return lax.cond(
                bm.blocks_intersect(row_summary, key_summary),
                functools.partial(visit_block, j),
                lambda s: s,
                state,
            )

        state = lax.fori_loop(refs[prefix + "lo"][i], refs[prefix + "hi"][i], body, state)

    if mode == "fwd":
        out, lse_out = bm.finish_softmax(state)
        refs["out"][...] = out.astype(refs["out"].dtype)
        refs["lse_out"][...] = lse_out
    else:
        refs["dq"][...] = (state * scale).astype(refs["dq"].dtype)


def row_pass(
    rows: layout.Rows,
    keysets: Sequence[layout.KeySet],
    *,
    scale: float,
    mode: str,
    interpret: bool,
    do=None,
    lse=None,
    delta=None,
):
    """mode "fwd": -> (out [B, K, R, H] q.dtype, lse [B, K, R] float32).
    mode "dq": do [B, K, R, H], lse/delta [B, K, R] -> dq [B, K, R, H] q.dtype."""
    b, k, r, h = rows.q.shape
    per_row = [("q", rows.q), ("row_seg", rows.seg), ("row_pos", rows.pos)]
    if mode == "dq":
        per_row += [("do", do), ("lse", lse), ("delta", delta)]
    operands = specs.row_block_operands(rows, per_row)
    operands += [
        specs.per_batch_operand(n, x)
        for n, x in zip(("row_smin", "row_smax", "row_pmax"), rows.summary)
    ]
    statics = []
    for n, ks in enumerate(keysets):
        prefix = f"ks{n}_"
        operands += specs.keyset_row_pass_operands(ks, prefix)
        statics.append((prefix, ks.block, ks.gathered, ks.limit))
    names, args, in_specs = specs.call_args(operands)

    row_spec = specs.row_block_operands(rows, [("o", rows.q)])[0].spec
    lse_spec = specs.row_block_operands(rows, [("l", rows.q[..., 0])])[0].spec
    if mode == "fwd":
        out_names = ("out", "lse_out")
        out_shape = (
            jax.ShapeDtypeStruct(rows.q.shape, rows.q.dtype),
            jax.ShapeDtypeStruct((b, k, r), jnp.float32),
        )
        out_specs = (row_spec, lse_spec)
    else:
        out_names, out_specs = ("dq",), (row_spec,)
        out_shape = (jax.ShapeDtypeStruct(rows.q.shape, rows.q.dtype),)

    kernel = functools.partial(
        _row_kernel, names=tuple(names) + out_names, keysets=tuple(statics), mode=mode, scale=scale
    )
    result = pl.pallas_call(
        kernel,
        grid=(b, k, rows.num_blocks),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=common.compiler_params(NUM_WARPS, NUM_STAGES),
        interpret=interpret,
        name=f"msa_attention_{mode}",
    )(*args)
    return tuple(result) if mode == "fwd" else result[0]
