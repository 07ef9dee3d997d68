"""Memory accounting of MSA-4B memory parallel (the tables of docs/memory_parallel.md).

Per device: routing tier shard, selected content kept in the KV cache, weights, an activation
allowance; per host: the pinned content tier of its devices. Computed with the same code that
refuses banks at run time (msa_jax.memory.capacity, msa_jax.memory.shard_plan); nothing is
allocated.

    PYTHONPATH=. python benchmarks/parallel/memory_accounting.py
    PYTHONPATH=. python benchmarks/parallel/memory_accounting.py --tokens 1e9 --doc_tokens 512
"""

from __future__ import annotations

import argparse

import msa_jax
from msa_jax.memory.bank import BankSpec
from msa_jax.memory.capacity import Demand, estimate, params_bytes
from msa_jax.memory.shard_plan import Assignment, shape_of
from msa_jax.model.params import abstract_params

GB = 1e9


def activations(cfg, prompt: int, new: int, batch: int) -> int:
    """KV cache of every layer for prompt + new tokens, and the largest transient ([T, F] MLP
    input and output, [T, V] float32 logits of the last token only)."""
    item = 2  # bfloat16
    kv = 2 * cfg.num_layers * batch * (prompt + new) * cfg.num_kv_heads * cfg.head_dim * item
    mlp = 3 * batch * prompt * cfg.intermediate_size * item
    return kv + mlp + 4 * batch * cfg.vocab_size


def row(cfg, spec, tokens: float, doc_tokens: int, gpus: int, hosts: int, demand: Demand) -> dict:
    docs = int(tokens) // doc_tokens
    per_doc = -(-doc_tokens // spec.pooling_size)
    assign = Assignment.empty(gpus).extend([per_doc] * docs)
    cs, _, _, cd = shape_of(assign, docs)
    cap = estimate(spec, gpus, cs, cd, demand, devices_per_process=gpus // hosts)
    return dict(gpus=gpus, hosts=hosts, cap=cap, cd=cd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokens", type=float, default=100e6, help="memory tokens")
    p.add_argument("--doc_tokens", type=int, default=1024, help="tokens per document")
    p.add_argument("--prompt", type=int, default=2048, help="question + context tokens")
    p.add_argument("--new", type=int, default=512, help="generated tokens")
    p.add_argument("--batch", type=int, default=1, help="questions per device")
    p.add_argument("--gpu_gb", type=float, default=80)
    a = p.parse_args()

    cfg = msa_jax.preset("msa-4b", dtype="bfloat16", param_dtype="bfloat16")
    spec = BankSpec("msa-4b", len(cfg.msa.router_layers), cfg.num_kv_heads, cfg.head_dim,
                    cfg.msa.pooling_size, "bfloat16")
    weights = params_bytes(abstract_params(cfg))
    act = activations(cfg, a.prompt, a.new, a.batch)
    demand = Demand(a.batch, cfg.msa.top_k_docs, weights, act)
    chunks = int(a.tokens) // a.doc_tokens * -(-a.doc_tokens // spec.pooling_size)
    per_chunk = spec.num_router_layers * spec.num_kv_heads * spec.head_dim * 2
    print(f"MSA-4B, {a.tokens / 1e6:g}M memory tokens in documents of {a.doc_tokens} tokens "
          f"({chunks} pooled chunks): routing tier {per_chunk * chunks / GB:.1f} GB, content tier "
          f"{2 * per_chunk * chunks / GB:.1f} GB (bfloat16); weights {weights / GB:.2f} GB; "
          f"activations {demand.activations / GB:.2f} GB (batch {a.batch}, {a.prompt} + {a.new} "
          f"tokens)")
    print(f"{'GPUs':>4} {'hosts':>5} | {'routing':>9} {'selected':>9} {'weights':>9} "
          f"{'activ.':>9} {'device':>9} {'free of':>12} | {'pinned/host':>11}")
    for gpus, hosts in ((2, 1), (8, 1), (8, 2)):
        r = row(cfg, spec, a.tokens, a.doc_tokens, gpus, hosts, demand)
        c = r["cap"]
        print(f"{gpus:>4} {hosts:>5} | {c.routing / GB:>6.2f} GB {c.fetched / GB:>6.3f} GB "
              f"{c.weights / GB:>6.2f} GB {c.activations / GB:>6.2f} GB {c.device / GB:>6.2f} GB "
              f"{(a.gpu_gb * GB - c.device) / GB:>6.1f}/{a.gpu_gb:g} GB | "
              f"{c.content_host / GB:>8.1f} GB")
    print(f"(selected = keys and values of top-{cfg.msa.top_k_docs} documents of up to "
          f"{r['cd']} chunks, every router layer, kept in the KV cache)")


if __name__ == "__main__":
    main()
