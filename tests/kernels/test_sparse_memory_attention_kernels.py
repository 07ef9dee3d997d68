"""sparse_memory_attention: XLA reference vs float64 numpy, Pallas (interpret) vs XLA reference,
and the gradients of both vs jax.grad of a plain dense masked attention."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels_pallas as kp
from kernels_pallas.sparse_memory_attention import pallas as sma_pallas
import kernel_oracles as oracles
import kernel_testing as kt

ALWAYS = -(2**30)  # mem_time that every query passes
SCENARIOS = ("prefill", "blocks", "nothing_visible")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    tokens: int
    heads: int
    kv_heads: int
    head_dim: int
    local: int
    pool: int  # P rows in the memory pool (0: no memory)
    slots: int  # Sm selected chunks per batch row
    dtype: object


# GQA groups 1/2/4/8, head_dim 64/128, float32/bfloat16, several index-list lengths, no memory.
CASES = [
    Case("g2_h64_f32", 2, 5, 4, 2, 64, 21, 13, 10, jnp.float32),
    Case("g8_h128_bf16", 1, 3, 8, 1, 128, 40, 50, 37, jnp.bfloat16),
    Case("g1_h64_bf16_no_memory", 2, 6, 2, 2, 64, 19, 0, 0, jnp.bfloat16),
    Case("g4_h128_f32_decode", 2, 1, 8, 2, 128, 33, 9, 5, jnp.float32),
]


def _times(rng, case: Case, scenario: str):
    """(q_time [B, T], local_time [B, S], mem_time [B]) for one visibility scenario."""
    b, t, s = case.batch, case.tokens, case.local
    if scenario == "prefill":  # 3 prefix slots at -1, causal bottom-right-aligned queries
        local = np.concatenate([np.full(3, -1), np.arange(s - 3)])[None].repeat(b, 0)
        q = np.arange(s - 3 - t, s - 3)[None].repeat(b, 0)
        mem = np.full(b, ALWAYS)
    else:  # bidirectional blocks: runs of keys share one time
        local = np.sort(rng.integers(0, 6, size=(b, s)), axis=1)
        q = rng.integers(0, 7, size=(b, t))
        mem = np.full(b, 3)  # queries before time 3 do not see memory
    if scenario == "nothing_visible":
        q[:, 0] = -100  # before every key and the memory: output must be zeros
    local = np.where(rng.random((b, s)) < 0.15, kp.INVALID_TIME, local)  # empty/masked slots
    return (jnp.asarray(q, jnp.int32), jnp.asarray(local, jnp.int32), jnp.asarray(mem, jnp.int32))


def make_inputs(case: Case, scenario: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    b, t, s, h = case.batch, case.tokens, case.local, case.head_dim
    q = kt.normal(rng, (b, t, case.heads, h), case.dtype)
    local_k = kt.normal(rng, (b, s, case.kv_heads, h), case.dtype)
    local_v = kt.normal(rng, (b, s, case.kv_heads, h), case.dtype)
    q_time, local_time, mem_time = _times(rng, case, scenario)
    mem = None
    if case.pool:
        valid = rng.random((b, case.slots)) < 0.8
        if scenario == "nothing_visible":
            valid[0] = False  # an empty memory row
        idx = rng.integers(0, case.pool, size=(b, case.slots))
        mem = dict(
            mem_k=kt.normal(rng, (case.pool, case.kv_heads, h), case.dtype),
            mem_v=kt.normal(rng, (case.pool, case.kv_heads, h), case.dtype),
            mem_idx=jnp.asarray(np.where(valid, idx, -1), jnp.int32),  # -1 where invalid
            mem_valid=jnp.asarray(valid),
            mem_time=mem_time,
        )
    return dict(q=q, q_time=q_time, local_k=local_k, local_v=local_v, local_time=local_time), mem


# Small blocks, so every loop and skip of the kernels runs over several blocks.
_pallas = jax.jit(
    functools.partial(
        sma_pallas.sparse_memory_attention, interpret=True, row_block=16, key_block=16, mem_block=16
    ),
    static_argnames=("scale",),
)


def run(backend: str, args: dict, mem, scale: float):
    mem = mem or {}
    if backend == "pallas":
        return _pallas(**args, **mem, scale=scale)
    return kp.sparse_memory_attention(**args, **mem, scale=scale, implementation="xla")


def numpy_oracle(args, mem, scale):
    k, v = oracles.memory_keys(args["local_k"], args["local_v"], mem)
    visible = oracles.time_visibility(args["q_time"], args["local_time"], mem)
    return oracles.np_attention(args["q"], k, v, visible, scale), visible


class SparseMemoryAttentionTestBase:
    BACKEND: str

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_forward(self, case):
        scale = case.head_dim**-0.5
        for scenario in SCENARIOS:
            args, mem = make_inputs(case, scenario)
            got = run(self.BACKEND, args, mem, scale)
            assert got.shape == args["q"].shape and got.dtype == case.dtype
            if self.BACKEND == "xla":
                want, visible = numpy_oracle(args, mem, scale)
            else:
                want = run("xla", args, mem, scale)
                visible = numpy_oracle(args, mem, scale)[1]
            kt.assert_close(got, want, case.dtype, what=f"{case.name}/{scenario}")
            unseen = ~visible.any(-1)  # [B, T]
            assert unseen.any() == (scenario == "nothing_visible")
            assert (np.asarray(got, np.float32)[unseen] == 0).all(), (
                "a query seeing nothing is not 0"
            )

    @pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=lambda c: c.name)
    def test_gradients(self, case):
        """d/d(q, local_k, local_v, mem_k, mem_v) vs jax.grad of dense masked attention."""
        scale = case.head_dim**-0.5
        args, mem = make_inputs(case, "blocks", seed=1)
        weights = kt.loss_weights(np.random.default_rng(2), args["q"].shape)
        diff = (args["q"], args["local_k"], args["local_v"], mem["mem_k"], mem["mem_v"])
        ints = {n: args[n] for n in ("q_time", "local_time")}
        rest = {n: mem[n] for n in ("mem_idx", "mem_valid", "mem_time")}

        def op(q, lk, lv, mk, mv):
            return run(
                self.BACKEND,
                dict(q=q, local_k=lk, local_v=lv, **ints),
                dict(mem_k=mk, mem_v=mv, **rest),
                scale,
            )

        visible = jnp.asarray(oracles.time_visibility(args["q_time"], args["local_time"], mem))
        safe_idx = jnp.where(mem["mem_valid"], mem["mem_idx"], 0)

        def dense(q, lk, lv, mk, mv):
            k = jnp.concatenate([mk[safe_idx], lk], axis=1)
            v = jnp.concatenate([mv[safe_idx], lv], axis=1)
            return oracles.dense_attention(q, k, v, visible, scale)

        got = kt.grads(op, diff, tuple(range(5)), weights)
        want = kt.grads(dense, diff, tuple(range(5)), weights)
        for name, g, w in zip(("q", "local_k", "local_v", "mem_k", "mem_v"), got, want):
            assert g.dtype == case.dtype
            kt.assert_close(g, w, case.dtype, grad=True, what=f"{case.name}/d{name}")


class TestSparseMemoryAttentionXla(SparseMemoryAttentionTestBase):
    BACKEND = "xla"


class TestSparseMemoryAttentionPallas(SparseMemoryAttentionTestBase):
    BACKEND = "pallas"

    def test_api_dispatches_to_pallas(self):
        case = CASES[3]
        args, mem = make_inputs(case, "prefill")
        got = kp.sparse_memory_attention(
            **args, **mem, scale=0.1, implementation="pallas", interpret=True
        )
        kt.assert_close(got, run("xla", args, mem, 0.1), case.dtype)


@pytest.mark.parametrize("backend", kt.BACKENDS)
def test_integer_inputs_get_no_gradient(backend):
    args, mem = make_inputs(CASES[0], "prefill")
    fn = lambda q, t: jnp.sum(
        kp.sparse_memory_attention(
            q,
            t,
            args["local_k"],
            args["local_v"],
            args["local_time"],
            scale=0.1,
            **kt.impl_kwargs(backend),
        )
    )
    dq, dt = jax.grad(fn, argnums=(0, 1), allow_int=True)(args["q"], args["q_time"])
    assert dq.shape == args["q"].shape and dt.dtype == jax.dtypes.float0


def test_rejects_bad_arguments():
    args, mem = make_inputs(CASES[0], "prefill")
    with pytest.raises(ValueError, match="local_v must have shape"):
        kp.sparse_memory_attention(**dict(args, local_v=args["local_v"][:, :-1]), scale=1.0)
    with pytest.raises(ValueError, match="all together"):
        kp.sparse_memory_attention(**args, mem_k=mem["mem_k"], scale=1.0)
    with pytest.raises(ValueError, match="mem_valid must have"):
        kp.sparse_memory_attention(**args, **dict(mem, mem_valid=mem["mem_idx"]), scale=1.0)
    with pytest.raises(ValueError, match="not a multiple"):
        kp.sparse_memory_attention(**dict(args, q=args["q"][:, :, :3]), scale=1.0)
    with pytest.raises(ValueError, match="implementation"):
        kp.sparse_memory_attention(**args, scale=1.0, implementation="cuda")
