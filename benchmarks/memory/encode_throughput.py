"""Encoding throughput (issue 11, item 3): tokens/s of `encode_memory` appending real documents to
banks that already hold N tokens, and `transformers`' Qwen3 body (`Qwen3Model`: no LM head,
batch 8) on the same documents, in the same run.

    python benchmarks/memory/encode_throughput.py                       # N = 0, 1M, 10M
    python benchmarks/memory/encode_throughput.py --at=1M,10M,100M --tokens=1M
    python benchmarks/memory/encode_throughput.py --at=0 --one_device   # + the one-device rate

msa-jax encodes as `msa-jax encode` does: one JAX CPU device per core, blocks spread over them
(`encode_memory(devices="local")`).

A random `tiny-msa` model (speed does not depend on the weights); documents of 200-500 random
tokens (`synthetic_token_corpus`). A bank of N tokens is filled first with random pooled chunks
through `MemoryBank.append` (as benchmarks/memory/bank_scaling.py builds its large banks), then
--tokens tokens are encoded into it: if appending cost grew with the bank, the rate would fall
with N. transformers runs the same documents 8 at a time, each batch padded to its longest
document (its attention mask marks the padding), on torch's threads = the cores here; its rate
counts real tokens only. Needs the [test] extra (torch, transformers) for the comparison; without
it that column is skipped. Targets: >= 80K tokens/s, flat (+-15 %) from 1M to 100M, >= 1.5x
transformers. Nothing here is a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# bank_scaling's helpers (importing it also puts the repository on sys.path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bank_scaling import bench_model, empty_bank, random_rows, tokens  # noqa: E402


def documents(model, n_tokens: int, seed: int) -> list:
    from msa_jax.data.synthetic import synthetic_token_corpus

    return list(synthetic_token_corpus(n_tokens, (200, 500), model.cfg.vocab_size, seed=seed))


def msa_rate(model, docs, at: int, seed: int, devices=None) -> dict:
    """Encode `docs` into a bank already holding `at` tokens (random chunks), on `devices`
    (encode_memory's: None = one device, "local" = one CPU device per core)."""
    bank = empty_bank(model)
    if at:
        random_rows(model, bank, at, seed + 1)
    n = sum(len(d.tokens) for d in docs)
    t = time.perf_counter()
    model.encode_memory(docs, bank=bank, progress=False, devices=devices)
    dt = time.perf_counter() - t
    return {"bank_tokens_before": at, "tokens": n, "seconds": dt, "tokens_per_s": n / dt,
            "devices": devices or "one"}


def transformers_rate(model, docs, batch: int = 8) -> dict | None:
    try:
        import torch
        import transformers
    except ImportError:
        return None
    cfg = model.cfg
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    hc = transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps)
    body = transformers.Qwen3Model(hc).eval()

    def run(part):
        longest = max(len(d.tokens) for d in part)
        ids = torch.zeros((len(part), longest), dtype=torch.long)
        mask = torch.zeros((len(part), longest), dtype=torch.long)
        for i, d in enumerate(part):
            ids[i, :len(d.tokens)] = torch.tensor(d.tokens)
            mask[i, :len(d.tokens)] = 1
        with torch.no_grad():
            body(input_ids=ids, attention_mask=mask)

    run(docs[:batch])  # warm-up
    n = sum(len(d.tokens) for d in docs)
    t = time.perf_counter()
    for i in range(0, len(docs), batch):
        run(docs[i:i + batch])
    dt = time.perf_counter() - t
    return {"tokens": n, "seconds": dt, "tokens_per_s": n / dt, "batch": batch,
            "torch": torch.__version__, "transformers": transformers.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--at", default="0,1M,10M", help="bank sizes to encode into (tokens)")
    p.add_argument("--tokens", type=tokens, default=tokens("512K"),
                   help="tokens of real documents encoded at each size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/encode_throughput")
    p.add_argument("--one_device", action="store_true",
                   help="also encode on one device at the first size (the rate before blocks "
                        "were spread over the cores)")
    args = p.parse_args(argv)
    from msa_jax.cli.common import use_cpu_cores

    use_cpu_cores()  # one CPU device per core, as `msa-jax encode` runs (before JAX starts)
    import jax

    model = bench_model()
    docs = documents(model, args.tokens, args.seed)
    # compile on every device: the block shapes (chunks per block) depend on the whole corpus
    model.encode_memory(docs, progress=False, devices="local")
    record = {"machine": f"{os.cpu_count()} CPUs", "jax": jax.__version__, "args": vars(args),
              "devices": len(jax.local_devices()), "msa_jax": []}
    peer = transformers_rate(model, docs)
    record["transformers"] = peer
    if peer:
        print(f"transformers Qwen3Model, batch 8: {peer['tokens_per_s']:,.0f} tokens/s",
              flush=True)
    sizes = list(map(tokens, args.at.split(",")))
    if args.one_device:
        model.encode_memory(docs, progress=False)  # compile on the first device alone
        record["one_device"] = row = msa_rate(model, docs, sizes[0], args.seed)
        print(f"msa-jax encode on one device, bank of {sizes[0]:,} tokens: "
              f"{row['tokens_per_s']:,.0f} tokens/s", flush=True)
    for at in sizes:
        row = msa_rate(model, docs, at, args.seed, devices="local")
        record["msa_jax"].append(row)
        ratio = f" ({row['tokens_per_s'] / peer['tokens_per_s']:.2f}x transformers)" \
            if peer else ""
        print(f"msa-jax encode into a bank of {at:,} tokens ({record['devices']} devices): "
              f"{row['tokens_per_s']:,.0f} tokens/s{ratio}", flush=True)
    rates = [r["tokens_per_s"] for r in record["msa_jax"]]
    print(f"spread across sizes: {max(rates) / min(rates) - 1:.1%}")
    flat = [r["tokens_per_s"] for r in record["msa_jax"] if r["bank_tokens_before"] >= 1 << 20]
    if len(flat) > 1:  # the target's range
        record["spread_1m_up"] = max(flat) / min(flat) - 1
        print(f"spread from 1M tokens up: {record['spread_1m_up']:.1%} (target <= 15 %)")
    os.makedirs(args.out, exist_ok=True)
    from msa_jax.utils import atomic_write_bytes

    path = os.path.join(args.out, "encode_throughput.json")
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
