"""BlockSpecs for the shared attention kernels: named operands, so kernels unpack refs by name.

Grid of the row-centric kernels (forward, dq): (B, K, NR) = (batch, KV head, row block).
Grid of the key-centric kernel (dk/dv): (B, K, NK) = (batch, KV head, key block).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from jax.experimental import pallas as pl

from kernels_pallas.attention_core import layout


class Operand(NamedTuple):
    name: str
    array: jax.Array
    spec: pl.BlockSpec


def row_block_operands(rows: layout.Rows, names_arrays) -> list:
    """Per-row arrays [B, K, R(, H)] or [B, R] blocked by row block (grid axis 2)."""
    br, out = rows.block, []
    for name, x in names_arrays:
        if x.ndim == 4:  # [B, K, R, H] -> [br, H]
            spec = pl.BlockSpec((None, None, br, x.shape[3]), lambda b, h, i: (b, h, i, 0))
        elif x.ndim == 3:  # [B, K, R] -> [br]
            spec = pl.BlockSpec((None, None, br), lambda b, h, i: (b, h, i))
        else:  # [B, R] -> [br]
            spec = pl.BlockSpec((None, br), lambda b, h, i: (b, i))
        out.append(Operand(name, x, spec))
    return out


def whole_row_operands(names_arrays) -> list:
    """Per-row arrays given whole to each program of the key-centric grid (sliced in the kernel)."""
    out = []
    for name, x in names_arrays:
        if x.ndim == 4:  # [B, K, R, H] -> [R, H]
            spec = pl.BlockSpec((None, None, x.shape[2], x.shape[3]), lambda b, h, j: (b, h, 0, 0))
        elif x.ndim == 3:  # [B, K, R] -> [R]
            spec = pl.BlockSpec((None, None, x.shape[2]), lambda b, h, j: (b, h, 0))
        else:  # [B, n] -> [n]
            spec = pl.BlockSpec((None, x.shape[1]), lambda b, h, j: (b, 0))
        out.append(Operand(name, x, spec))
    return out


def per_batch_operand(name: str, x: jax.Array) -> Operand:
    """[B, n] -> the whole row [n] for the program's batch entry (either grid)."""
    return Operand(name, x, pl.BlockSpec((None, x.shape[1]), lambda b, h, i: (b, 0)))


def kv_whole_operands(keys: layout.KeySet, prefix: str) -> list:
    """K/V of a key set, whole for the program's (batch, KV head): [S, H] or the pool [P, H]."""
    out = []
    for name, x in (("k", keys.k), ("v", keys.v)):
        if keys.gathered:  # pool [P, K, H] -> [P, H]
            spec = pl.BlockSpec((x.shape[0], None, x.shape[2]), lambda b, h, i: (0, h, 0))
        else:  # [B, S, K, H] -> [S, H]
            spec = pl.BlockSpec((None, x.shape[1], None, x.shape[3]), lambda b, h, i: (b, 0, h, 0))
        out.append(Operand(prefix + name, x, spec))
    return out


def keyset_row_pass_operands(keys: layout.KeySet, prefix: str) -> list:
    """Everything a row-centric kernel needs to loop over one key set."""
    ops = kv_whole_operands(keys, prefix)
    if keys.gathered:
        ops.append(per_batch_operand(prefix + "idx", keys.idx))
    ops += [
        per_batch_operand(prefix + "seg", keys.seg),
        per_batch_operand(prefix + "pos", keys.pos),
    ]
    ops += [
        per_batch_operand(prefix + n, x) for n, x in zip(("smin", "smax", "pmin"), keys.summary)
    ]
    ops += [per_batch_operand(prefix + "lo", keys.lo), per_batch_operand(prefix + "hi", keys.hi)]
    return ops


def call_args(operands):
    return [o.name for o in operands], [o.array for o in operands], [o.spec for o in operands]
