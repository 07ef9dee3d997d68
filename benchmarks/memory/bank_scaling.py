"""The memory bank from 16K to 100M tokens on this machine (issue 11): build + save, bytes on
disk, load, the device view, and questions, each size in fresh processes so that the RSS figures
are that size's own.

    python benchmarks/memory/bank_scaling.py                       # 16K, 1M, 10M
    python benchmarks/memory/bank_scaling.py --sizes=16K,1M,10M,100M --out=outputs/bank
    python benchmarks/memory/bank_scaling.py --sizes=16K,1M,10M,100M \
        --model=models/msa-tiny-demo --dtype=bfloat16 --routing_dtype=int8
    python benchmarks/memory/bank_scaling.py --sizes=10M --shards=4    # memory parallel
    python benchmarks/memory/bank_scaling.py --sizes=10M --processes=2  # ... over 2 processes

A random `tiny-msa` model by default (vocabulary 32768, float32 tiers: 96 B per memory token),
or `--model=DIR` (a saved model, e.g. models/msa-tiny-demo, the demo-sized model), tiers of
`--dtype` / `--routing_dtype` (speed and memory do not depend on the weights). Banks up to
--encode_max tokens are encoded for real (stage 1 on documents of 200-500 tokens); larger ones
get random pooled chunks of the same shapes through the same `MemoryBank.append` (encoding
throughput is measured on the encoded sizes and by benchmarks/memory/encode_throughput.py).
Per size:
- build: seconds and peak RSS of build + `save_bank` (one process);
- disk: bytes of each tier file; tier bytes in theory (`MemoryBank.tier_bytes`);
- load: seconds of `load_bank` (checksums on, checked per segment on first read) in a fresh
  process; then `view()` as `ask` builds it (seconds, RSS after), then `--questions` questions
  of a 72-token routing query (`ask_tokens`, 32 new tokens): median latency, RSS after them,
  and the peak; then the routing scan alone on the same view (every router layer, as `ask`
  runs it), its share of a question, and its bandwidth floor (the view's routing tier bytes /
  a NumPy copy's bandwidth measured in the same process, read + write bytes).
- with --shards N, memory parallel: the view is a MemoryPlacement over N CPU devices (content
  tier in pinned host memory), each shard filled from its own documents' rows of the
  memory-mapped tier files; the questions run under it; no scan probe.
- with --processes P (memory parallel over P processes on localhost, jax.distributed, one CPU
  device each, or --shards / P each): the bank is built as P local banks of size / P tokens, one
  folder each (process p's documents); each query process loads only its own folder, builds
  the `DistributedBank` and a `MemoryPlacement` over every process's devices, and the P
  processes ask the questions together; printed per process: RSS after load, view and
  questions, and its peak, against its own tier bytes (no process maps or copies another's).
Targets (issue 11): peak RSS of build + save <= tier bytes + 2 GiB; load <= 5 s at 100M; RSS
after 10 questions <= 1.2 x tier bytes + 2 GiB; latency at 10M within 2x of 16K. Nothing here is
a test: it prints what it measured, and which resource stopped a size that did not finish.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

UNITS = {"K": 2 ** 10, "M": 2 ** 20}


def tokens(text: str) -> int:
    t = text.strip().upper()
    return int(float(t[:-1]) * UNITS[t[-1]]) if t[-1] in UNITS else int(float(t))


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 2 ** 20
    return float("nan")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def bench_model(name: str = "tiny-msa"):
    """A random model of a preset (`tiny-msa`), or a saved model's folder (models/msa-tiny-demo):
    speed and memory do not depend on the weights, the shapes come from its config."""
    import msa_jax

    if os.path.isdir(name):
        return msa_jax.from_pretrained(name)
    return msa_jax.MSAModel.random(msa_jax.preset(name), 0)


def empty_bank(model, dtype: str | None = None, routing_dtype: str | None = None):
    """A bank of `model` with no documents (its prefix and fingerprint), tiers of `dtype` (and
    `routing_dtype`)."""
    bank = model.encode_memory([[5] * 200], progress=False, dtype=dtype,
                               routing_dtype=routing_dtype)
    bank.delete([bank.doc_ids[0]])
    return bank


def random_rows(model, bank, n_tokens: int, seed: int, step_docs: int = 512, prefix: str = "doc"):
    """Append documents of 200-500 tokens holding random pooled chunks, `n_tokens` in all,
    `step_docs` (~180K tokens) per append: more than an encoder block (512 or 4096 tokens), and
    the random arrays of one step stay small beside the bank (~6 MB per tier at tiny-msa)."""
    import numpy as np

    rs = np.random.default_rng(seed)
    p, done, first = model.cfg.msa.pooling_size, 0, 0
    while done < n_tokens:
        lens = rs.integers(200, 501, step_docs)
        lens = lens[np.cumsum(lens) <= n_tokens - done] if lens.sum() > n_tokens - done else lens
        if lens.size == 0:
            lens = np.array([n_tokens - done])
        chunks = -(-lens // p)
        shape = bank.spec.chunk_shape(int(chunks.sum()))
        arrays = [rs.standard_normal(shape, dtype=np.float32) for _ in range(3)]
        bank.append([f"{prefix}{first + i}" for i in range(lens.size)],
                    [np.full(n, 5, np.int32) for n in lens], [None] * lens.size,
                    chunks.tolist(), *arrays)
        done += int(lens.sum())
        first += lens.size


def build(size: int, path: str, args) -> dict:
    """Child process: build a bank of `size` tokens and save it to `path`."""
    from msa_jax.data.synthetic import synthetic_token_corpus
    from msa_jax.memory.store import save_bank

    model = bench_model(args.model)
    dtypes = dict(dtype=args.dtype or None, routing_dtype=args.routing_dtype or None)
    t = time.perf_counter()
    if size <= args.encode_max:
        docs = synthetic_token_corpus(size, (200, 500), model.cfg.vocab_size, seed=args.seed)
        if args.id_prefix != "doc":  # a process's local bank: ids of its own
            from msa_jax.memory.encoder import DocInput
            docs = [DocInput(f"{args.id_prefix}{i}", tuple(d)) for i, d in enumerate(docs)]
        bank = model.encode_memory(docs, progress=False, **dtypes)
        how = "encoded"
    else:
        bank = empty_bank(model, **dtypes)
        random_rows(model, bank, size, args.seed, prefix=args.id_prefix)
        how = "random chunks"
    built = time.perf_counter() - t
    save_bank(bank, path)
    return {"how": how, "memory_tokens": bank.num_tokens, "documents": bank.num_docs,
            "build_s": built, "build_save_s": time.perf_counter() - t,
            "tokens_per_s": bank.num_tokens / built,
            "tier_bytes": dict(bank.tier_bytes()), "build_save_peak_rss_gib": peak_gib()}


def scan_probe(model, view, packed, repeats: int = 6) -> dict:
    """The routing scan alone, as `ask` runs it (router.routing_rows + gather_rows +
    query.local_select, every router layer, jitted with the query, mask and view as inputs), on
    the real view; and, interleaved with it, the copy bandwidth (a NumPy copy of the routing
    tier's size, STREAM read + write), for the scan's bandwidth floor. Best of `repeats`
    (cpu_routing_bandwidth.measure)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, os.path.join(REPO, "benchmarks", "kernels"))
    from cpu_routing_bandwidth import measure
    from msa_jax.model.query import local_select
    from msa_jax.model.router import gather_rows, routing_rows

    cfg = model.cfg

    @jax.jit
    def scan(qr, routing, view):
        index, mask = routing_rows(cfg.msa, routing, packed.routing_rows)
        q = gather_rows(qr, index)
        return [local_select(cfg, view, r, q, mask).doc_ids
                for r in range(len(view.routing_keys))]

    rng = np.random.default_rng(0)
    t = packed.tokens.shape[1]
    qr = jnp.asarray(rng.standard_normal((1, t, cfg.num_heads, cfg.head_dim), np.float32))
    routing = jnp.asarray(packed.routing)
    tier = sum(a.nbytes for a in view.routing_keys) + sum(
        a.nbytes for a in (view.routing_scale or ()))
    src = np.ones(max(tier, 256 << 20) // 4, np.float32)
    dst = np.empty_like(src)
    best = measure(dict(scan=lambda: scan(qr, routing, view),
                        copy=lambda: np.copyto(dst, src)), repeats)
    copy_bps = 2 * src.nbytes / best["copy"]
    return {"scan_s": best["scan"], "routing_tier_view_bytes": tier, "copy_gbs": copy_bps / 1e9,
            "scan_bandwidth_floor_s": tier / copy_bps}


def query(path: str, args) -> dict:
    """Child process: load the bank, build its view (with --shards: a MemoryPlacement over
    that many CPU devices, content tier in pinned host memory), ask `args.questions` questions
    of a 72-token routing query; then (one device) time the routing scan alone (scan_probe)."""
    from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, pack_rows
    from msa_jax.memory.store import load_bank

    if args.processes:  # before anything touches a device
        from msa_jax.memory import distributed
        distributed.initialize(f"127.0.0.1:{args.port}", args.processes, args.process_id)
    model = bench_model(args.model)
    placement = None
    if args.shards or args.processes:
        from msa_jax.memory.parallel import MemoryPlacement
        placement = MemoryPlacement()  # every device of every process on the memory axis
    base = rss_gib()
    t = time.perf_counter()
    bank = load_bank(path)
    out = {"load_s": time.perf_counter() - t, "rss_after_load_gib": rss_gib(),
           "rss_before_load_gib": base, "local_tier_bytes": dict(bank.tier_bytes())}
    if args.processes:
        bank = distributed.DistributedBank(bank)  # metadata exchanged, tiers stay local
    t = time.perf_counter()
    unit = model.cfg.msa.inference_cosine  # as `ask` builds the view
    view = placement.view(bank, unit_keys=unit) if placement else bank.view(unit_keys=unit)
    out.update(view_s=time.perf_counter() - t, rss_after_view_gib=rss_gib(),
               view_peak_rss_gib=peak_gib())
    if placement:
        out["shard_chunks"] = placement.plan(bank).shard_chunks
    row = QueryRow.build((list(range(100, 172)), ROUTING), (list(range(200, 216)), CONTEXT))
    times = []
    for _ in range(args.questions + 1):  # the first compiles
        t = time.perf_counter()
        model.ask_tokens([row], bank, max_new_tokens=32, placement=placement)
        times.append(time.perf_counter() - t)
    out.update(first_question_s=times[0], question_s=statistics.median(times[1:]),
               rss_after_questions_gib=rss_gib(), query_peak_rss_gib=peak_gib())
    if not placement:
        out.update(scan_probe(model, view, pack_rows(model.cfg, [row])))
    return out


def _env(devices: int) -> dict:
    env = dict(os.environ)
    if devices:  # before JAX starts in the child
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    return env


def _child(args: list[str], devices: int = 0) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                          capture_output=True, text=True, env=_env(devices))
    return _result(proc)


def _result(proc) -> dict:
    if proc.returncode != 0:
        why = "killed by signal %d" % -proc.returncode if proc.returncode < 0 else \
            f"exit {proc.returncode}"
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{why}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _disk(path: str) -> dict:
    return {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))
            if f.endswith(".bin") and os.path.isfile(os.path.join(path, f))}


def _options(args) -> list[str]:
    return [f"--model={args.model}", f"--dtype={args.dtype}",
            f"--routing_dtype={args.routing_dtype}"]


def one_size_processes(size: int, args) -> dict:
    """--processes P: P local banks of size / P tokens built and saved, then P query processes
    that each load only their own and ask together (jax.distributed on localhost)."""
    import socket

    n = args.processes
    row = {"target_tokens": size, "processes": n, "builds": [], "query": []}
    print(f"\n== {size:,} tokens over {n} processes", flush=True)
    paths = [os.path.join(args.work, f"bank-{size}-p{p}of{n}") for p in range(n)]
    for p, path in enumerate(paths):
        shutil.rmtree(path, ignore_errors=True)
        b = _child(["--child=build", f"--size={size // n}", f"--path={path}",
                    f"--encode_max={args.encode_max}", f"--seed={args.seed + p}",
                    f"--id_prefix=p{p}-doc", *_options(args)])
        row["builds"].append(b)
        if "error" in b:
            print(f"  build of process {p}'s bank stopped: {b['error']}")
            return row
        print(f"  process {p}'s bank: {b['memory_tokens']:,} tokens ({b['how']}), tiers "
              f"{sum(b['tier_bytes'].values()) / 2 ** 30:.2f} GiB, build + save peak RSS "
              f"{b['build_save_peak_rss_gib']:.2f} GiB", flush=True)
    with socket.socket() as sock:  # a free port for the coordinator
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child=query", f"--path={path}",
         f"--questions={args.questions}", f"--processes={n}", f"--process_id={p}",
         f"--port={port}", *_options(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(max(args.shards // n, 1))) for p, path in enumerate(paths)]
    for p, proc in enumerate(procs):
        stdout, stderr = proc.communicate()
        q = _result(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        row["query"].append(q)
        if "error" in q:
            print(f"  query process {p} stopped: {q['error']}")
            continue
        tier = sum(q["local_tier_bytes"].values()) / 2 ** 30
        print(f"  process {p}: its tiers {tier:.2f} GiB; load {q['load_s']:.2f} s, view "
              f"{q['view_s']:.1f} s; question {q['question_s'] * 1e3:.0f} ms (median of "
              f"{args.questions}); RSS after load {q['rss_after_load_gib']:.2f}, after the view "
              f"{q['rss_after_view_gib']:.2f}, after the questions "
              f"{q['rss_after_questions_gib']:.2f} GiB (target <= {1.2 * tier + 2:.2f}), peak "
              f"{q['query_peak_rss_gib']:.2f}", flush=True)
    if not args.keep:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
    return row


def one_size(size: int, args) -> dict:
    if args.processes:
        return one_size_processes(size, args)
    path = os.path.join(args.work, f"bank-{size}")
    shutil.rmtree(path, ignore_errors=True)
    row = {"target_tokens": size}
    print(f"\n== {size:,} tokens", flush=True)
    opts = [*_options(args), f"--seed={args.seed}"]
    row.update(_child(["--child=build", f"--size={size}", f"--path={path}",
                       f"--encode_max={args.encode_max}", *opts]))
    if "error" in row:
        print(f"  build stopped: {row['error']}")
        return row
    tier = sum(row["tier_bytes"].values()) / 2 ** 30
    row["disk_bytes"] = _disk(path)
    print(f"  build ({row['how']}) + save {row['build_save_s']:.1f} s "
          f"({row['tokens_per_s']:,.0f} tokens/s to build), peak RSS "
          f"{row['build_save_peak_rss_gib']:.2f} GiB (target <= {tier + 2:.2f}); tiers "
          f"{tier:.2f} GiB, on disk {sum(row['disk_bytes'].values()) / 2 ** 30:.2f} GiB",
          flush=True)
    q = _child(["--child=query", f"--path={path}", f"--questions={args.questions}",
                f"--shards={args.shards}", *opts], args.shards)
    row["query"] = q
    if "error" in q:
        print(f"  query stopped: {q['error']}")
    else:
        print(f"  load {q['load_s']:.2f} s, view {q['view_s']:.1f} s; question "
              f"{q['question_s'] * 1e3:.0f} ms (median of {args.questions}); RSS after the "
              f"questions {q['rss_after_questions_gib']:.2f} GiB (target <= "
              f"{1.2 * tier + 2:.2f}), peak {q['query_peak_rss_gib']:.2f} (building the view: "
              f"{q['view_peak_rss_gib']:.2f})", flush=True)
    if "scan_s" in q:
        print(f"  routing scan alone {q['scan_s'] * 1e3:.1f} ms ({q['scan_s'] / q['question_s']:.0%} "
              f"of a question); bandwidth floor {q['scan_bandwidth_floor_s'] * 1e3:.1f} ms "
              f"({q['routing_tier_view_bytes'] / 2 ** 20:.0f} MiB at {q['copy_gbs']:.1f} GB/s "
              f"copy): {q['scan_bandwidth_floor_s'] / q['scan_s']:.0%} of it", flush=True)
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="16K,1M,10M")
    p.add_argument("--encode_max", type=tokens, default=tokens("1M"),
                   help="sizes up to this are encoded for real; larger get random chunks")
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="tiny-msa",
                   help="a preset (random weights) or a saved model's folder")
    p.add_argument("--dtype", default="", help="tiers' dtype (default: the model's)")
    p.add_argument("--routing_dtype", default="",
                   help="routing tier's dtype if not --dtype: float32, bfloat16 or int8")
    p.add_argument("--work", default="outputs/bank_scaling/banks")
    p.add_argument("--out", default="outputs/bank_scaling")
    p.add_argument("--keep", action="store_true", help="keep the banks")
    p.add_argument("--shards", type=int, default=0,
                   help="memory parallel: the view as a MemoryPlacement over this many CPU "
                        "devices (each filled from its own documents' rows of the tier files)")
    p.add_argument("--processes", type=int, default=0,
                   help="memory parallel over this many processes on localhost (each loads "
                        "only its own bank of size / processes tokens)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--id_prefix", default="doc", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--path", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "build":
        print(json.dumps(build(args.size, args.path, args)))
        return
    if args.child == "query":
        print(json.dumps(query(args.path, args)))
        return
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    record = {"machine": f"{os.cpu_count()} CPUs", "args": vars(args), "sizes": []}
    for size in map(tokens, args.sizes.split(",")):
        record["sizes"].append(one_size(size, args))
        from msa_jax.utils import atomic_write_bytes

        atomic_write_bytes(os.path.join(args.out, "bank_scaling.json"),
                           json.dumps(record, indent=1).encode())
    print(f"\nwrote {os.path.join(args.out, 'bank_scaling.json')}")


if __name__ == "__main__":
    main()
