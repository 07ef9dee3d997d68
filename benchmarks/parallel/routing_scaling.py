"""Memory-parallel routing at 10M memory tokens: 1 device vs 2 devices of this machine.

Synthesises a bank (routing tier + host content tier) of `memory_tokens` tokens for a small model
shape, places it with MemoryPlacement on a memory axis of 1 and of 2 devices (each count in its own
process, XLA_FLAGS=--xla_force_host_platform_device_count=N) and times the whole routing step of a
question for every router layer: sharded scores, local and global top-k, fetch of the selected
documents from the host content tier. Prints latency (batch 1), throughput (a batch of
questions) and the speed-up of 2 devices over 1 (best of `repeats` runs each).

    PYTHONPATH=. python benchmarks/parallel/routing_scaling.py
    PYTHONPATH=. python benchmarks/parallel/routing_scaling.py --devices 1 2 4 --memory_tokens 2e6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def synth_bank(a):
    """A MemoryBank of ~memory_tokens tokens in `docs` documents, random tiers."""
    import numpy as np
    from msa_jax.memory.bank import BankSpec, MemoryBank
    rng = np.random.default_rng(0)
    chunks = int(a.memory_tokens) // a.pooling
    counts = rng.multinomial(chunks - a.docs, np.ones(a.docs) / a.docs) + 1  # >= 1 chunk each
    spec = BankSpec("synthetic", a.router_layers, a.kv_heads, a.head_dim, a.pooling, a.dtype)
    prefix = np.zeros((1, 0, a.kv_heads, a.head_dim), np.float32)
    bank = MemoryBank(spec, prefix, prefix)
    tier = lambda: rng.standard_normal(spec.chunk_shape(chunks), np.float32).astype(  # noqa: E731
        bank.tier("routing_keys").dtype)
    bank.append([str(i) for i in range(a.docs)], [(0,)] * a.docs, [None] * a.docs,
                counts.tolist(), tier(), tier(), tier())
    return bank


def worker(a):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import msa_jax
    from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
    from msa_jax.model.router import selected_chunks

    cfg = msa_jax.preset("tiny", num_heads=a.heads, num_kv_heads=a.kv_heads, head_dim=a.head_dim,
                         num_layers=a.router_layers, msa=msa_jax.MSAConfig(
                             router_layers=tuple(range(a.router_layers)),
                             pooling_size=a.pooling, top_k_docs=a.top_k))
    bank = synth_bank(a)
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:a.worker]))
    start = time.perf_counter()
    view = placement.view(bank)
    place_s = time.perf_counter() - start

    @jax.jit
    def route(view, qr, mask):  # every router layer: select, then fetch the chosen chunks
        out = []
        for r in range(a.router_layers):
            info = placement.select(cfg, view, r, qr, mask)
            idx, _ = selected_chunks(info.doc_ids, info.valid, view.doc_chunk_offset,
                                     view.doc_num_chunks, view.max_doc_chunks)
            out.append((info.doc_ids, placement.fetch(view, r, idx)))
        return out

    def timing(batch: int) -> float:
        rng = np.random.default_rng(batch)
        qr = jnp.asarray(rng.standard_normal((batch, a.tokens, a.heads, a.head_dim), np.float32))
        mask = jnp.ones((batch, a.tokens), bool)
        jax.block_until_ready(route(view, qr, mask))  # compile, warm up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            jax.block_until_ready(route(view, qr, mask))
            times.append(time.perf_counter() - t)
        return float(np.min(times))  # best of: the machine may be shared

    latency = timing(1)
    batch_s = timing(a.batch)
    tier = bank.tier_bytes()
    print(json.dumps(dict(devices=a.worker, latency_s=latency, batch_s=batch_s, batch=a.batch,
                          place_s=place_s, routing_bytes=tier["routing"],
                          content_bytes=tier["content"], chunks=bank.num_chunks)))


def drive(a):
    rows = []
    for n in a.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        cmd = [sys.executable, __file__, "--worker", str(n)] + sys.argv[1:]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        if out.returncode:
            sys.exit(f"worker with {n} devices failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = rows[0]
    print(f"memory: {a.memory_tokens / 1e6:g}M tokens = {first['chunks']} chunks in {a.docs} "
          f"documents; routing tier {first['routing_bytes'] / 1e6:.0f} MB on device, content "
          f"tier {first['content_bytes'] / 1e6:.0f} MB pinned host ({a.router_layers} router "
          f"layers x [{a.kv_heads}, {a.head_dim}] {a.dtype}); routing step = scores + top-{a.top_k}"
          f" + fetch, {a.tokens} routing tokens, N={a.heads}")
    print(f"{'devices':>7} {'latency B=1':>12} {'tokens/s B=1':>13} "
          f"{f'questions/s B={a.batch}':>17} {'speed-up lat.':>13} {'speed-up thr.':>13}")
    for row in rows:
        qps = row["batch"] / row["batch_s"]
        print(f"{row['devices']:>7} {row['latency_s'] * 1e3:>9.1f} ms "
              f"{a.memory_tokens / row['latency_s'] / 1e9:>9.2f} G/s "
              f"{qps:>17.1f} {first['latency_s'] / row['latency_s']:>12.2f}x "
              f"{first['batch_s'] / row['batch_s']:>12.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--memory_tokens", type=float, default=10e6)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--pooling", type=int, default=64, help="P tokens per pooled chunk")
    p.add_argument("--router_layers", type=int, default=2, help="R")
    p.add_argument("--heads", type=int, default=4, help="N")
    p.add_argument("--kv_heads", type=int, default=2, help="K")
    p.add_argument("--head_dim", type=int, default=128, help="H")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tokens", type=int, default=4, help="routing-query tokens per question")
    p.add_argument("--top_k", type=int, default=16)
    p.add_argument("--batch", type=int, default=16, help="questions per batch (throughput)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--timeout", type=int, default=600, help="seconds per worker")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
    else:
        drive(a)


if __name__ == "__main__":
    main()
