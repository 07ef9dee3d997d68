"""Every Pallas kernel, forward and backward, lowers for CUDA through the Triton backend at MSA-4B
head sizes (N 32, K 8, H 128, bfloat16) -- on a machine without a GPU, via jax.export.

This runs the Pallas->Triton lowering (power-of-two block checks, unsupported primitives, captured
constants), which interpret mode never does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import kernels_pallas as kp
from kernels_pallas import common

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"
)

N, K, H, BF16 = 32, 8, 128, jnp.bfloat16
PALLAS = dict(implementation="pallas")


def spec(shape, dtype=BF16):
    return jax.ShapeDtypeStruct(shape, dtype)


def lowered_triton_calls(fn, *args, kernels=()) -> int:
    """Lowers for CUDA; checks the named kernels are there with explicit Triton params."""
    text = common.lower_for_cuda(fn, *args)
    for name in kernels:
        assert f'name = "{name}", num_stages = ' in text, f"kernel {name} missing or without params"
    return common.count_triton_calls(text)


def grad_of(fn, argnums):
    return jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), argnums=argnums)


@pytest.mark.parametrize(
    "similarity,head_reduce,chunks", [("cosine", "mean", 4000), ("dot", "max", 4096)]
)
def test_routing_scan_lowers(similarity, head_reduce, chunks):
    """4000 chunks: a ragged last tile (masked loads); 4096: whole tiles (plain loads)."""
    fn = lambda qr, mask, kr, doc: kp.routing_doc_scores(
        qr,
        mask,
        kr,
        doc,
        num_docs=64,
        similarity=similarity,
        head_reduce=head_reduce,
        scale=H**-0.5,
        **PALLAS,
    )
    args = (
        spec((1, 32, N, H)),
        spec((1, 32), jnp.bool_),
        spec((chunks, K, H)),
        spec((chunks,), jnp.int32),
    )
    assert lowered_triton_calls(fn, *args, kernels=["msa_routing_scan"]) == 1


@pytest.mark.parametrize("tokens,local", [(64, 67), (1, 4096)], ids=["prefill", "decode"])
def test_sparse_memory_attention_lowers(tokens, local):
    """prefill: 67 local keys (a ragged last block, masked loads); decode: a 4096-slot cache."""
    ints = (
        spec((1, tokens), jnp.int32),
        spec((1, local), jnp.int32),
        spec((1, 256), jnp.int32),
        spec((1, 256), jnp.bool_),
        spec((1,), jnp.int32),
    )

    def fn(q, lk, lv, mk, mv, q_time, local_time, idx, valid, mem_time):
        return kp.sparse_memory_attention(
            q, q_time, lk, lv, local_time, mk, mv, idx, valid, mem_time, scale=H**-0.5, **PALLAS
        )

    floats = (
        spec((1, tokens, N, H)),
        spec((1, local, K, H)),
        spec((1, local, K, H)),
        spec((2048, K, H)),
        spec((2048, K, H)),
    )
    assert lowered_triton_calls(fn, *floats, *ints, kernels=["msa_attention_fwd"]) == 1
    # backward: forward + dq + dk/dv of the local keys + dk/dv of the memory slots
    names = ["msa_attention_fwd", "msa_attention_dq", "msa_attention_dkv"]
    assert lowered_triton_calls(grad_of(fn, (0, 1, 2, 3, 4)), *floats, *ints, kernels=names) == 4


def test_document_attention_lowers():
    fn = lambda q, k, v, seg: kp.document_attention(q, k, v, seg, scale=H**-0.5, **PALLAS)
    args = (
        spec((1, 2048, N, H)),
        spec((1, 2048, K, H)),
        spec((1, 2048, K, H)),
        spec((1, 2048), jnp.int32),
    )
    assert lowered_triton_calls(fn, *args, kernels=["msa_attention_fwd"]) == 1
    names = ["msa_attention_fwd", "msa_attention_dq", "msa_attention_dkv"]
    assert lowered_triton_calls(grad_of(fn, (0, 1, 2)), *args, kernels=names) == 3


def test_lowering_catches_a_bad_block():
    """The check is real: a non-power-of-two block that interpret mode accepts fails to lower."""
    from kernels_pallas.routing import pallas as routing_pallas

    q = spec((1, 4, K, H))
    fn = lambda q, m, kr: routing_pallas.chunk_partials(
        q,
        m,
        kr,
        similarity="dot",
        head_reduce="mean",
        query_reduce="max",
        block_chunks=48,
        interpret=False,
    )
    with pytest.raises(Exception, match="power of 2"):
        common.lower_for_cuda(fn, q, spec((1, 4), jnp.bool_), spec((96, K, H)))
