"""Benchmark the MSA kernels against their roofline floor and against the XLA path.

For each op it prints time, achieved bandwidth and FLOP rate, the fraction of the HBM / tensor-core
floor (roofline.py, one router layer), and the Pallas speed-up over XLA. Targets on a GPU:
routing scan >= 70% of the bandwidth floor; sparse attention >= 3x the XLA path.

    # on a GPU (H100 / A800):
    python benchmarks/kernels/gpu_bench.py --op=all --implementation=both --memory_tokens=1e7
    python benchmarks/kernels/gpu_bench.py --op=routing --implementation=pallas --memory_tokens=1e8
    # on CPU, small, so it does not rot:
    python benchmarks/kernels/gpu_bench.py --op=all --implementation=xla --memory_tokens=1e5 \\
        --query_tokens=4 --packed_tokens=512
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roofline  # noqa: E402

import kernels_pallas as kp  # noqa: E402

# (HBM GB/s, dense bf16 TFLOP/s) by device kind; anything else: pass --hbm_gbs / --tflops.
PEAKS = {
    "H100": (3350.0, 989.0),
    "H200": (4800.0, 989.0),
    "A800": (2039.0, 312.0),
    "A100": (2039.0, 312.0),
}


def device_peaks(args) -> tuple:
    kind = jax.devices()[0].device_kind
    known = next((v for k, v in PEAKS.items() if k in kind), (None, None))
    return kind, args.hbm_gbs or known[0], args.tflops or known[1]


def bench(fn, *args, iters: int) -> float:
    """Median seconds per call after a compile-and-warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def routing_case(a, rng, dtype):
    m = a.model
    chunks = int(a.memory_tokens) // m.pooling
    docs = max(1, chunks // 16)
    qr = jnp.asarray(rng.standard_normal((a.batch, a.query_tokens, m.heads, m.head_dim)), dtype)
    kr = jnp.asarray(rng.standard_normal((chunks, m.kv_heads, m.head_dim)), dtype)
    mask = jnp.ones((a.batch, a.query_tokens), bool)
    doc = jnp.asarray(np.minimum(np.arange(chunks) // 16, docs - 1), jnp.int32)

    def make(impl):
        return jax.jit(
            lambda qr, kr, mask, doc: kp.routing_doc_scores(
                qr, mask, kr, doc, num_docs=docs, scale=m.head_dim**-0.5, **_impl(a, impl)
            )
        )

    cost = roofline.routing_scan(m, chunks * m.pooling, a.query_tokens, a.batch)
    return make, (qr, kr, mask, doc), cost


def sparse_attention_case(a, rng, dtype):
    m = a.model
    slots = m.top_k * -(-a.doc_tokens // m.pooling)
    pool = max(slots, int(a.memory_tokens) // m.pooling)
    b, t, local = a.batch, a.query_tokens, 3 + a.query_tokens
    normal = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)
    q, lk, lv = (
        normal(b, t, m.heads, m.head_dim),
        normal(b, local, m.kv_heads, m.head_dim),
        normal(b, local, m.kv_heads, m.head_dim),
    )
    mk, mv = normal(pool, m.kv_heads, m.head_dim), normal(pool, m.kv_heads, m.head_dim)
    q_time = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    local_time = jnp.broadcast_to(
        jnp.concatenate([jnp.full(3, -1), jnp.arange(t)]).astype(jnp.int32), (b, local)
    )
    idx = jnp.asarray(
        np.stack([rng.choice(pool, slots, replace=False) for _ in range(b)]), jnp.int32
    )
    valid, mem_time = jnp.ones((b, slots), bool), jnp.full((b,), -(2**30), jnp.int32)

    def make(impl):
        def fn(q, lk, lv, mk, mv, q_time, local_time, idx, valid, mem_time):
            return kp.sparse_memory_attention(
                q,
                q_time,
                lk,
                lv,
                local_time,
                mk,
                mv,
                idx,
                valid,
                mem_time,
                scale=m.head_dim**-0.5,
                **_impl(a, impl),
            )

        return jax.jit(_maybe_grad(fn, a.backward, 5))

    cost = roofline.sparse_attention(m, t, slots, local, b)
    inputs = (q, lk, lv, mk, mv, q_time, local_time, idx, valid, mem_time)
    return make, inputs, _backward_cost(cost, a.backward)


def document_attention_case(a, rng, dtype):
    m = a.model
    b, l = a.batch, a.packed_tokens
    normal = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)
    q, k, v = (
        normal(b, l, m.heads, m.head_dim),
        normal(b, l, m.kv_heads, m.head_dim),
        normal(b, l, m.kv_heads, m.head_dim),
    )
    seg = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32) // a.doc_tokens, (b, l))

    def make(impl):
        fn = lambda q, k, v, seg: kp.document_attention(
            q, k, v, seg, scale=m.head_dim**-0.5, **_impl(a, impl)
        )
        return jax.jit(_maybe_grad(fn, a.backward, 3))

    per_doc = roofline.document_attention(m, min(a.doc_tokens, l), b * max(1, l // a.doc_tokens))
    return make, (q, k, v, seg), _backward_cost(per_doc, a.backward)


def _impl(a, impl: str) -> dict:
    return dict(implementation=impl, interpret=a.interpret and impl == "pallas")


def _maybe_grad(fn, backward: bool, num_float_args: int):
    """fn, or the gradient of sum(fn) in its first num_float_args arguments."""
    if not backward:
        return fn
    return jax.grad(
        lambda *x: jnp.sum(fn(*x).astype(jnp.float32)), argnums=tuple(range(num_float_args))
    )


def _backward_cost(cost: dict, backward: bool) -> dict:
    """Forward + backward of attention: ~2.5x the forward FLOPs (recompute + 2 extra GEMMs) and ~3x
    the bytes (read q, k, v, o, do; write dq, dk, dv)."""
    return dict(bytes=cost["bytes"] * 3, flops=cost["flops"] * 2.5) if backward else cost


CASES = {
    "routing": routing_case,
    "sparse_attention": sparse_attention_case,
    "document_attention": document_attention_case,
}


def run_op(name: str, a, peaks) -> None:
    _, hbm, tflops = peaks
    rng = np.random.default_rng(0)
    make, inputs, cost = CASES[name](a, rng, jnp.dtype(a.dtype))
    impls = ("xla", "pallas") if a.implementation == "both" else (a.implementation,)
    times = {}
    for impl in impls:
        t = times[impl] = bench(make(impl), *inputs, iters=a.iters)
        line = (
            f"{name:18s} {impl:6s} {t * 1e3:9.3f} ms  {cost['bytes'] / t / 1e9:9.1f} GB/s  "
            f"{cost['flops'] / t / 1e12:8.2f} TFLOP/s"
        )
        if hbm and tflops:
            floor = max(cost["bytes"] / (hbm * 1e9), cost["flops"] / (tflops * 1e12))
            bound = "HBM" if cost["bytes"] / hbm > cost["flops"] / (tflops * 1e3) else "FLOP"
            line += f"  floor {floor * 1e3:.3f} ms ({bound}-bound) -> {floor / t:6.1%} of floor"
        print(line, flush=True)
    if len(times) == 2:
        print(f"{name:18s} pallas speed-up over xla: {times['xla'] / times['pallas']:.2f}x")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--op", default="all", choices=["all", *CASES])
    p.add_argument("--implementation", default="both", choices=["xla", "pallas", "both"])
    p.add_argument("--memory_tokens", type=float, default=1e7, help="tokens in memory")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--query_tokens", type=int, default=32, help="routing-query / question tokens")
    p.add_argument("--doc_tokens", type=int, default=1024, help="tokens per document")
    p.add_argument("--packed_tokens", type=int, default=16384, help="document_attention length")
    p.add_argument("--backward", action="store_true", help="time forward + backward (attention)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--interpret", action="store_true", help="Pallas in interpret mode (CPU smoke)")
    p.add_argument("--hbm_gbs", type=float, default=None, help="override HBM bandwidth, GB/s")
    p.add_argument("--tflops", type=float, default=None, help="override bf16 peak, TFLOP/s")
    a = p.parse_args(argv)
    itemsize = jnp.dtype(a.dtype).itemsize
    a.model = dataclasses.replace(roofline.Model(), router_layers=1, layers=1, itemsize=itemsize)
    return a


def main(argv=None) -> None:
    a = parse(argv)
    peaks = device_peaks(a)
    print(
        f"device: {peaks[0]}  (HBM {peaks[1]} GB/s, bf16 {peaks[2]} TFLOP/s)  "
        f"one router layer of MSA-4B, {a.dtype}, batch {a.batch}"
    )
    for name in CASES if a.op == "all" else [a.op]:
        run_op(name, a, peaks)


if __name__ == "__main__":
    main()
