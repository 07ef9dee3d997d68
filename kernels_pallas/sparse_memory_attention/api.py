"""sparse_memory_attention dispatcher: validation, then the XLA reference or the Pallas kernels."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas import common
from kernels_pallas.sparse_memory_attention import pallas
from kernels_pallas.sparse_memory_attention import reference

_MEMORY = ("mem_k", "mem_v", "mem_idx", "mem_valid", "mem_time")


def _validate(q, q_time, local_k, local_v, local_time, memory: dict):
    common.check_array("q", q, (None, None, None, None), "float")
    b, t, n, h = q.shape
    common.check_array("q_time", q_time, (b, t), "int")
    common.check_array("local_k", local_k, (b, None, None, h), [q.dtype])
    common.check_array("local_v", local_v, local_k.shape, [q.dtype])
    s, kh = local_k.shape[1], local_k.shape[2]
    common.check_gqa(n, kh, "q", "local_k")
    common.check_array("local_time", local_time, (b, s), "int")
    given = [name for name in _MEMORY if memory[name] is not None]
    if given and len(given) != len(_MEMORY):
        missing = [name for name in _MEMORY if memory[name] is None]
        raise ValueError(
            f"memory arguments must be given all together or not at all; got {given}, "
            f"missing {missing}"
        )
    if not given:
        return
    common.check_array("mem_k", memory["mem_k"], (None, kh, h), [q.dtype])
    common.check_array("mem_v", memory["mem_v"], memory["mem_k"].shape, [q.dtype])
    common.check_array("mem_idx", memory["mem_idx"], (b, None), "int")
    common.check_array("mem_valid", memory["mem_valid"], memory["mem_idx"].shape, [jnp.bool_])
    common.check_array("mem_time", memory["mem_time"], (b,), "int")
    if memory["mem_k"].shape[0] == 0 and memory["mem_idx"].shape[1] > 0:
        raise ValueError(
            f"mem_k is an empty pool {tuple(memory['mem_k'].shape)} but mem_idx "
            f"{tuple(memory['mem_idx'].shape)} has slots"
        )


@functools.partial(jax.jit, static_argnames=("scale", "implementation", "interpret"))
def _dispatch(q, q_time, local_k, local_v, local_time, memory, *, scale, implementation, interpret):
    if implementation == "pallas":
        return pallas.sparse_memory_attention(
            q, q_time, local_k, local_v, local_time, **memory, scale=scale, interpret=interpret
        )
    return reference.sparse_memory_attention(
        q, q_time, local_k, local_v, local_time, **memory, scale=scale
    )


def sparse_memory_attention(
    q,
    q_time,
    local_k,
    local_v,
    local_time,
    mem_k=None,
    mem_v=None,
    mem_idx=None,
    mem_valid=None,
    mem_time=None,
    *,
    scale,
    implementation="auto",
    interpret=False,
):
    """Attention of queries over selected memory chunks and local K/V, by integer time (SPEC §2).

    q [B, T, N, H]; q_time [B, T] int32. local_k/v [B, S, K, H], local_time [B, S] int32: key j is
    visible to query i iff local_time[j] <= q_time[i] and local_time[j] != INVALID_TIME.
    Memory (all five or none): mem_k/v [P, K, H] pool of pooled chunks; mem_idx [B, Sm] int32 pool
    rows (any value where not valid); mem_valid [B, Sm] bool; mem_time [B] int32, memory visible to
    query i iff mem_time[b] <= q_time[b, i]. Returns [B, T, N, H] in q.dtype; a query with no
    visible key gets zeros. Differentiable in q, local_k/v, mem_k/v.
    """
    memory = dict(mem_k=mem_k, mem_v=mem_v, mem_idx=mem_idx, mem_valid=mem_valid, mem_time=mem_time)
    _validate(q, q_time, local_k, local_v, local_time, memory)
    if mem_k is None or mem_idx.shape[1] == 0:
        memory = {}
    return _dispatch(
        q,
        q_time,
        local_k,
        local_v,
        local_time,
        memory,
        scale=float(scale),
        implementation=common.resolve_implementation(implementation),
        interpret=bool(interpret),
    )
