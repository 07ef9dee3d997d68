"""document_attention dispatcher: validation, then the XLA reference or the Pallas kernels."""

from __future__ import annotations

import functools

import jax

from kernels_pallas import common
from kernels_pallas.document_attention import pallas
from kernels_pallas.document_attention import reference


def _check_block(name, block):
    if block is not None and (block < 16 or block & (block - 1)):
        raise ValueError(f"{name} must be a power of two >= 16, got {block}")


@functools.partial(
    jax.jit,
    static_argnames=(
        "scale", "implementation", "interpret", "block_q", "block_k", "band", "prefix"
    ),
)
def _dispatch(q, k, v, segment_ids, *, scale, implementation, interpret, block_q, block_k, band,
              prefix):
    if implementation == "pallas":  # skips masked key blocks itself: `band` is not needed
        return pallas.document_attention(
            q, k, v, segment_ids, scale=scale, interpret=interpret, block_q=block_q, block_k=block_k
        )
    if band is not None:
        return reference.banded_document_attention(
            q, k, v, segment_ids, scale=scale, band=band, prefix=prefix
        )
    return reference.document_attention(q, k, v, segment_ids, scale=scale)


def document_attention(
    q,
    k,
    v,
    segment_ids,
    *,
    scale,
    implementation="auto",
    interpret=False,
    block_q=None,
    block_k=None,
    band=None,
    prefix=0,
):
    """Document-wise causal attention over packed documents (SPEC §3).

    q [B, L, N, H]; k, v [B, L, K, H]; segment_ids [B, L] int32 (>= 0 a segment, < 0 padding).
    Token i attends to j iff segment_ids[j] == segment_ids[i] >= 0 and j <= i. Returns [B, L, N, H]
    in q.dtype; padding queries get zeros. Pallas blocks: block_q query rows (a row is a (token,
    head of the GQA group) pair) and block_k keys, powers of two >= 16. Differentiable in q, k, v.

    band, prefix (static ints): the caller's guarantee that any two tokens of one segment, the
    later at index i and the earlier at j >= prefix, have i - j < band (0 <= prefix <= band).
    The XLA path then attends block-banded (`reference.banded_document_attention`), O(L·band)
    instead of O(L²), with the same result; the Pallas kernels skip masked blocks regardless.
    """
    common.check_array("q", q, (None, None, None, None), "float")
    b, l, n, h = q.shape
    common.check_array("k", k, (b, l, None, h), [q.dtype])
    common.check_array("v", v, k.shape, [q.dtype])
    common.check_gqa(n, k.shape[2], "q", "k")
    common.check_array("segment_ids", segment_ids, (b, l), "int")
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    if band is not None and not (band >= 1 and 0 <= prefix <= band):
        raise ValueError(f"band must be >= 1 and prefix in [0, band], got band={band}, "
                         f"prefix={prefix}")
    return _dispatch(
        q,
        k,
        v,
        segment_ids,
        scale=float(scale),
        implementation=common.resolve_implementation(implementation),
        interpret=bool(interpret),
        block_q=block_q,
        block_k=block_k,
        band=None if band is None else int(band),
        prefix=int(prefix),
    )
