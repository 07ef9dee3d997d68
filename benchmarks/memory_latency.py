"""Stage-1 encoding throughput, query latency (routing + answer) against memories of 16K, 1M and
10M tokens, and bytes per memory token in each tier.

    python benchmarks/memory_latency.py [--sizes 16384,1048576,10485760] [--encode_tokens 262144]

A small random MSA model (speed does not depend on the weights). Encoding is measured for real on
`--encode_tokens` tokens; the larger banks are filled with random pooled tensors of the right
shapes (routing and answering cost depend on the shapes, not the values). Target (issue 3):
query latency at 10M within 2x of that at 16K.
"""

import argparse
import time

import jax
import numpy as np

import msa_jax
from msa_jax.data.synthetic import synthetic_token_corpus
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow
from msa_jax.memory.bank import MemoryBank
from msa_jax.memory.encoder import DocInput


def small_msa(pool: int) -> msa_jax.ModelConfig:
    return msa_jax.preset("tiny", vocab_size=4096, hidden_size=256, intermediate_size=768,
                          num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                          msa=msa_jax.MSAConfig(router_layers=(2, 3), pooling_size=pool,
                                                top_k_docs=16, prefix_token_ids=(1, 2, 3)))


def synthetic_bank(model: msa_jax.MSAModel, tokens: int, doc_len: int, seed: int) -> MemoryBank:
    """A bank of `tokens` memory tokens with random pooled tensors (documents of doc_len)."""
    cfg = model.cfg
    template = model.encode_memory([[5] * doc_len], progress=False)  # prefix + fingerprint
    bank = MemoryBank(template.spec, template.prefix_k, template.prefix_v)
    rs = np.random.default_rng(seed)
    p = cfg.msa.pooling_size
    per_doc = -(-doc_len // p)
    n_docs = tokens // doc_len
    step = 4096
    for first in range(0, n_docs, step):
        n = min(step, n_docs - first)
        shape = bank.spec.chunk_shape(n * per_doc)
        arrays = [rs.standard_normal(shape, dtype=np.float32) for _ in range(3)]
        bank.append([f"doc{first + i}" for i in range(n)], [(5,) * doc_len] * n, [None] * n,
                    [per_doc] * n, *arrays)
    return bank


def query_latency(model, bank, repeats: int, new_tokens: int) -> float:
    row = QueryRow.build(([7, 8, 9, 10, 11, 12, 13, 14], ROUTING), ([4, 3, 1], CONTEXT))
    run = lambda: model.ask_tokens([row], bank, max_new_tokens=new_tokens)  # noqa: E731
    run()  # compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16384,1048576,10485760")
    ap.add_argument("--encode_tokens", type=int, default=262144)
    ap.add_argument("--doc_len", type=int, default=512)
    ap.add_argument("--block_tokens", type=int, default=512)
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = small_msa(args.pool)
    model = msa_jax.MSAModel.random(cfg, 0)
    print(f"model: D={cfg.hidden_size} layers={cfg.num_layers} router layers="
          f"{cfg.msa.router_layers} K={cfg.num_kv_heads} H={cfg.head_dim} P={args.pool} "
          f"top-k={cfg.msa.top_k_docs}; jax {jax.__version__} on {jax.devices()[0].platform}")

    docs = [DocInput(d.id, d.tokens) for d in synthetic_token_corpus(
        args.encode_tokens, doc_len=args.doc_len, vocab_size=cfg.vocab_size, seed=0)]
    model.encode_memory(docs[:8], block_tokens=args.block_tokens, progress=False)  # compile
    t = time.perf_counter()
    bank = model.encode_memory(docs, block_tokens=args.block_tokens, progress=False)
    dt = time.perf_counter() - t
    print(f"encoding: {bank.num_tokens} tokens in {dt:.1f} s = {bank.num_tokens / dt:,.0f} "
          f"tokens/s (stage 1, all {cfg.num_layers} layers, blocks of {args.block_tokens} tokens)")
    b = bank.tier_bytes()
    print(f"bytes per memory token: routing tier {b['routing'] / bank.num_tokens:.1f} B, "
          f"content tier {b['content'] / bank.num_tokens:.1f} B (this model, float32)")
    r, k, h, p = 18, 8, 128, 64  # MSA-4B, bf16 (docs/msa.md §3)
    print(f"  MSA-4B accounting (bf16): routing {r * k * h * 2 / p:.0f} B, content "
          f"{2 * r * k * h * 2 / p:.0f} B per token; this model scaled the same way: routing "
          f"{len(cfg.msa.router_layers) * cfg.num_kv_heads * cfg.head_dim * 4 / p:.1f} B")
    base = None
    print(f"{'memory tokens':>14s}{'docs':>9s}{'routing tier':>14s}{'latency':>10s}{'vs 16K':>8s}")
    for size in (int(s) for s in args.sizes.split(",")):
        big = synthetic_bank(model, size, args.doc_len, seed=size)
        lat = query_latency(model, big, args.repeats, args.new_tokens)
        base = base or lat
        print(f"{size:>14,d}{big.num_docs:>9,d}{big.tier_bytes()['routing'] / 2**20:>11.1f} MB"
              f"{lat * 1000:>8.0f} ms{lat / base:>7.2f}x")
        del big
    print(f"(latency = stage-2 prefill with routing in {len(cfg.msa.router_layers)} router layers "
          f"+ {args.new_tokens} decoded tokens, best of {args.repeats})")


if __name__ == "__main__":
    main()
