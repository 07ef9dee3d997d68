"""Roofline of the MSA kernels for MSA-4B: bytes and FLOPs per question, and the time floors.

    PYTHONPATH=. python benchmarks/kernels/roofline.py            # the table in docs/kernels.md

Used by gpu_bench.py for its floors. All sizes in bytes, FLOPs counted as 2 per multiply-add.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Model:
    """MSA-4B (Qwen3-4B backbone): msa.md §1-§4."""

    layers: int = 36
    router_layers: int = 18  # layers 18..35
    heads: int = 32  # N
    kv_heads: int = 8  # K
    head_dim: int = 128  # H
    pooling: int = 64  # P tokens per pooled chunk
    top_k: int = 16  # documents selected per router layer
    itemsize: int = 2  # bfloat16


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    hbm_gbs: float  # HBM bandwidth, GB/s
    bf16_tflops: float  # dense bf16 tensor-core peak, TFLOP/s


DEVICES = (
    Device("H100 SXM (nominal 3.35 TB/s)", 3350.0, 989.0),
    Device("H100 SXM (measured copy ~3.0 TB/s)", 3000.0, 989.0),
    Device("A800 80GB (~2.0 TB/s)", 2000.0, 312.0),
)
MEMORY_TOKENS = (1e6, 1e7, 1e8)


def routing_scan(m: Model, memory_tokens: float, query_tokens: int, batch: int = 1) -> dict:
    """One question, all router layers: the whole routing tier is read once; with head_reduce="mean"
    the G query heads of a KV head fold into one query, so each chunk costs 2*T*K*H FLOPs."""
    chunks = memory_tokens / m.pooling
    tier = chunks * m.kv_heads * m.head_dim * m.itemsize * m.router_layers
    flops = 2 * batch * query_tokens * m.kv_heads * m.head_dim * chunks * m.router_layers
    return dict(bytes=tier, flops=flops)


def sparse_attention(m: Model, query_tokens: int, slots: int, local: int, batch: int = 1) -> dict:
    """One question, all router layers: read the selected pooled K and V ([Sm, K, H] each) and the
    local K/V once per KV head group; QK^T and PV cost 4*T*N*H FLOPs per key."""
    keys = slots + local
    kv = 2 * keys * m.kv_heads * m.head_dim * m.itemsize * batch
    q_out = 2 * query_tokens * m.heads * m.head_dim * m.itemsize * batch
    flops = 4 * batch * query_tokens * m.heads * m.head_dim * keys
    return dict(bytes=(kv + q_out) * m.router_layers, flops=flops * m.router_layers)


def document_attention(m: Model, doc_tokens: int, num_docs: int) -> dict:
    """Encoding num_docs documents of doc_tokens each through all layers (forward): causal
    attention within each document, ~L^2/2 keys per document."""
    pairs = num_docs * doc_tokens * (doc_tokens + 1) / 2
    flops = 4 * m.heads * m.head_dim * pairs * m.layers
    qkvo = (
        num_docs * doc_tokens * (2 * m.heads + 2 * m.kv_heads) * m.head_dim * m.itemsize * m.layers
    )
    return dict(bytes=qkvo, flops=flops)


def floor_seconds(cost: dict, dev: Device) -> float:
    return max(cost["bytes"] / (dev.hbm_gbs * 1e9), cost["flops"] / (dev.bf16_tflops * 1e12))


def table(query_tokens: int = 32, doc_tokens: int = 1024, local: int = 3 + 32) -> str:
    m = Model()
    slots = m.top_k * -(-doc_tokens // m.pooling)
    lines = [
        f"MSA-4B, bf16, {query_tokens} routing-query tokens, top-{m.top_k} documents of "
        f"{doc_tokens} tokens ({slots} pooled chunks), batch 1",
        "",
    ]
    head = (
        "| memory tokens | op | bytes / question | FLOPs / question | "
        + " | ".join(d.name for d in DEVICES)
        + " |"
    )
    lines += [head, "|" + "---|" * (4 + len(DEVICES))]
    for tokens in MEMORY_TOKENS:
        rows = [
            ("routing scan", routing_scan(m, tokens, query_tokens)),
            ("sparse attention", sparse_attention(m, query_tokens, slots, local)),
        ]
        for name, cost in rows:
            floors = " | ".join(f"{floor_seconds(cost, d) * 1e3:.3f} ms" for d in DEVICES)
            lines.append(
                f"| {tokens:.0e} | {name} | {cost['bytes'] / 1e9:.4g} GB | "
                f"{cost['flops'] / 1e9:.4g} GFLOP | {floors} |"
            )
    docs = int(1e6 // doc_tokens)
    cost = document_attention(m, doc_tokens, docs)
    floors = " | ".join(f"{floor_seconds(cost, d):.3f} s" for d in DEVICES)
    lines += [
        "",
        f"document attention, encoding 1M memory tokens ({docs} documents of {doc_tokens}),"
        f" 36 layers, forward: {cost['bytes'] / 1e9:.4g} GB, {cost['flops'] / 1e12:.4g} TFLOP;"
        f" floors {floors}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
