"""Training throughput, and the MSA train step against dense attention as the memory grows.

    PYTHONPATH=. python benchmarks/training_throughput.py --out outputs/training_throughput.json
    PYTHONPATH=. python benchmarks/training_throughput.py --skip_recipes --max_tokens 8192

(a) Recipes: tokens/s of the whole jitted train step (msa_jax.training.step.jit_step: forward,
    backward, AdamW) on the real batches of configs/train_tiny.py and configs/train_demo.py
    (their model, optimiser and pipeline, built as `msa-jax train` builds them). Warm steps
    only: a step whose batch shape (L, M) was not seen before compiles and is not counted; the
    figure is the median step. tokens = the non-pad tokens of the global batch.
(b) Scaling: one sample whose memory holds `tokens` memory tokens (documents of --doc_tokens,
    the train_demo model), the jitted value_and_grad of
    - MSA: `loss_and_metrics` with max_segment / max_active set (banded document attention,
      the active tokens' attention on gathered tokens, routed top-k pooled memory);
    - dense: the same Transformer (same params) as a plain causal LM over the concatenation
      [template head ; documents ; question ; target] (every token attends causally to all
      earlier ones, the project's document_attention with one segment), LM loss on the target;
    at memory sizes 1K, 2K, 4K, ... doubling up to --max_tokens. A method stops at the first size
    whose compiled step needs more than --ram_cap_gb of temporary memory (XLA's own estimate,
    before running: "does not fit"), or whose step would take more than --time_cap_s (predicted
    from its last two sizes: last * last / previous; "over the time cap"), or after a size whose
    measured step took longer than that.
    Printed: ms per step of both, their ratio, and the log-log slope of each curve (least
    squares over all measured sizes, and over the last three): ~1 linear, ~2 quadratic.

Timing is the median of --repeats steps after one warm-up (compilation) call; the machine may be
shared, so the load average at the start and the end is printed and written to --out (rewritten
after every measurement, so a run stopped early keeps what it measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kernels_pallas import document_attention  # noqa: E402
from msa_jax.cli.commands import train as train_cmd  # noqa: E402
from msa_jax.model.decode import kernel_kwargs, logits_of  # noqa: E402
from msa_jax.model.params import init_params  # noqa: E402
from msa_jax.model.train_forward import TrainBatch  # noqa: E402
from msa_jax.model.transformer import Transformer  # noqa: E402
from msa_jax.training import optim, packing, pipeline  # noqa: E402
from msa_jax.training import step as st  # noqa: E402
from msa_jax.training.losses import IGNORE, lm_loss  # noqa: E402
from msa_jax.utils import atomic_write_bytes  # noqa: E402

RECIPES = ("train_tiny", "train_demo")
QUESTION, TARGET = 24, 16  # tokens of the scaling sample's question and labelled target


def load_recipe(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn() (blocked until its results are ready)."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


# -- (a) the recipes -------------------------------------------------------------------------------
def recipe_throughput(name: str, steps: int, num_queries: int) -> dict:
    """Median warm step of the recipe's jitted train step on its own batches (1 device)."""
    config = load_recipe(name)
    config.data.num_queries = num_queries  # enough samples for `steps` batches, quick to build
    cfg, _, tok = train_cmd.model_and_tokenizer(config, None)
    ocfg = train_cmd.optim_config(config)
    d = config.data
    pcfg = pipeline.PipelineConfig(batch_size=d.batch_size, length_buckets=d.length_buckets,
                                   doc_buckets=d.doc_buckets, routing_rows=ocfg.batch_negatives,
                                   max_segment=ocfg.max_segment, max_active=ocfg.max_active)
    batches = pipeline.StepBatches(train_cmd.training_samples(d), tok, cfg, pcfg, seed=d.seed)
    mesh = st.data_mesh(1)
    tx = optim.make_optimizer(ocfg)
    state = st.place_state(cfg, mesh, st.init_state(init_params(cfg, 0), tx))
    fns, seen, warm = {}, set(), []
    for i in range(steps):
        batch = batches(i)
        m = int(batch["num_docs"])
        fn = fns.setdefault(m, st.jit_step(cfg, ocfg, tx, m, mesh, state))
        t = time.perf_counter()
        state, metrics = fn(state, st.shard_batch(mesh, batch))
        jax.block_until_ready(metrics)
        dt = time.perf_counter() - t
        shape = batch["tokens"].shape
        if shape in seen:  # a new shape compiled in this call: not counted
            warm.append((dt, int(metrics["tokens"]), int(np.prod(shape))))
        seen.add(shape)
    if not warm:
        raise SystemExit(f"{name}: no warm step in {steps} steps; raise --recipe_steps")
    dt, tokens, padded = (float(np.median([w[j] for w in warm])) for j in range(3))
    return {"recipe": name, "batch": d.batch_size, "warm_steps": len(warm),
            "ms_per_step": 1e3 * dt, "tokens_per_step": tokens, "padded_tokens_per_step": padded,
            "tokens_per_s": tokens / dt, "padded_tokens_per_s": padded / dt,
            "params": int(sum(x.size for x in jax.tree.leaves(state.params)))}


# -- (b) MSA against dense -------------------------------------------------------------------------
def scaling_model(doc_tokens: int):
    """train_demo's model (byte tokenizer, vocabulary 1024: no BPE needed) and optimiser
    settings, with max_segment = doc_tokens."""
    config = load_recipe("train_demo")
    config.model.tokenizer, config.model.vocab_size = "byte", 1024
    cfg, _, _ = train_cmd.model_and_tokenizer(config, None)
    ocfg = dataclasses.replace(train_cmd.optim_config(config), max_segment=doc_tokens,
                               max_active=QUESTION + TARGET, batch_negatives=0)
    return cfg, ocfg


def scaling_sample(cfg, memory_tokens: int, doc_tokens: int, seed: int = 0):
    """One sample: memory_tokens / doc_tokens random documents, a question, a target."""
    rng = np.random.default_rng(seed)
    tokens = lambda n: tuple(int(t) for t in rng.integers(4, cfg.vocab_size, n))  # noqa: E731
    docs = tuple(tokens(doc_tokens) for _ in range(memory_tokens // doc_tokens))
    return packing.TokenizedSample("scaling", docs, tokens(QUESTION + TARGET),
                                   (0,) * QUESTION + (packing.ACTIVE_ROLE,) * TARGET,
                                   (False,) * QUESTION + (True,) * TARGET, (1,))


def msa_step(cfg, ocfg, params, sample: packing.TokenizedSample):
    """(jitted value_and_grad of the MSA loss, its batch) on the packed sample."""
    head = cfg.msa.prefix_token_ids
    n = sample.length(len(head))
    m = len(sample.documents)
    packing.check_sample(sample, len(head), packing.Buckets(
        (n,), (m,), max_segment=ocfg.max_segment, max_active=ocfg.max_active))
    x = packing.pack_batch([sample], head, cfg.msa.query_offset, 0, n, m)
    batch = TrainBatch(*(jnp.asarray(x[k]) for k in st.BATCH_FIELDS))
    fn = jax.jit(jax.value_and_grad(lambda p, b: st.loss_and_metrics(
        cfg, p, b, m, 1.0, 0.1, 0, ocfg.max_segment, ocfg.max_active)[0]))
    return fn, (params, batch)


def dense_loss(cfg, params, tokens, positions, labels):
    """Plain causal LM loss: every token attends causally to all earlier ones (one segment)."""
    segment = jnp.zeros(tokens.shape, jnp.int32)  # [B, L]

    def attend(i, p):  # [B, L, N, H]
        return document_attention(p.q, p.k, p.v, segment, **kernel_kwargs(cfg)), None

    h, _, _ = Transformer(cfg).apply({"params": params}, tokens, positions, attend)
    return lm_loss(logits_of(cfg, params, h), labels)


def dense_step(cfg, params, sample: packing.TokenizedSample):
    """(jitted value_and_grad of the dense loss, its inputs): [head ; documents ; active]."""
    row = list(cfg.msa.prefix_token_ids) + [t for d in sample.documents for t in d]
    labels = [IGNORE] * len(row) + [t if lab else IGNORE
                                    for t, lab in zip(sample.active, sample.labelled)]
    row += sample.active
    tokens = jnp.asarray([row], jnp.int32)  # [1, L]
    positions = jnp.arange(len(row), dtype=jnp.int32)[None]  # [1, L]
    fn = jax.jit(jax.value_and_grad(lambda p, t, q, y: dense_loss(cfg, p, t, q, y)))
    return fn, (params, tokens, positions, jnp.asarray([labels], jnp.int32))


def measure(build, repeats: int, ram_cap: float) -> dict:
    """Compile, check XLA's temporary-memory estimate against ram_cap bytes, then time."""
    fn, args = build()
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = {"temp_gb": temp / 2 ** 30, "compile_s": compile_s}
    if temp > ram_cap:
        return dict(out, fits=False)
    jax.block_until_ready(compiled(*args))  # warm-up
    times = timed(lambda: compiled(*args), repeats)
    return dict(out, fits=True, ms=1e3 * float(np.median(times)), times_ms=[1e3 * x for x in
                                                                            times])


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(ms) against log(tokens)."""
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def predicted_ms(rows: list[dict], method: str) -> float | None:
    """The next doubling's step time, from the method's last two measured sizes."""
    ms = [r[method]["ms"] for r in rows if r.get(method, {}).get("fits")]
    return ms[-1] * ms[-1] / ms[-2] if len(ms) >= 2 else None


def measure_or_skip(a, rows: list[dict], method: str, build) -> dict:
    guess = predicted_ms(rows, method)
    if guess is not None and guess > 1e3 * a.time_cap_s:
        return {"fits": False, "over_time_cap": True, "predicted_ms": guess}
    return measure(build, a.repeats, a.ram_cap_gb * 2 ** 30)


def describe(r: dict) -> str:
    if r.get("over_time_cap"):
        return f"over the time cap (predicted {r['predicted_ms'] / 1e3:.0f} s per step)"
    return (f"{r['ms']:10.1f} ms" if r["fits"] else "does not fit") + \
        f"  (XLA temp {r['temp_gb']:.2f} GB, compile {r['compile_s']:.1f} s)"


def scaling(a, save=lambda result: None) -> dict:
    """MSA vs dense at doubling memory sizes; save(partial result) after every measurement."""
    cfg, ocfg = scaling_model(a.doc_tokens)
    params = init_params(cfg, 0)
    rows, live = [], {"msa": True, "dense": True}
    result = {"model": {"layers": cfg.num_layers, "hidden": cfg.hidden_size,
                        "router_layers": list(cfg.msa.router_layers),
                        "pooling": cfg.msa.pooling_size, "top_k_docs": cfg.msa.top_k_docs,
                        "vocab": cfg.vocab_size},
              "doc_tokens": a.doc_tokens, "question_tokens": QUESTION, "target_tokens": TARGET,
              "rows": rows}
    sizes = [1024 * 2 ** i for i in range(64) if 1024 * 2 ** i <= a.max_tokens]
    for n in sizes:
        sample = scaling_sample(cfg, n, a.doc_tokens)
        row = {"memory_tokens": n}
        rows.append(row)
        builds = {"msa": lambda: msa_step(cfg, ocfg, params, sample),
                  "dense": lambda: dense_step(cfg, params, sample)}
        for method, build in builds.items():
            if not live[method]:
                continue
            r = row[method] = measure_or_skip(a, rows[:-1], method, build)
            live[method] = r["fits"] and r["ms"] <= 1e3 * a.time_cap_s
            print(f"  {n:>8} memory tokens  {method:5} {describe(r)}", flush=True)
            save(result)
        if not any(live.values()):
            break
    curves = {m: [(r["memory_tokens"], r[m]["ms"]) for r in rows if r.get(m, {}).get("fits")]
              for m in live}
    result["slopes"] = {m: {"all": slope(c), "last3": slope(c[-3:])} for m, c in curves.items()}
    save(result)
    return result


def print_table(result: dict):
    print("\nmemory tokens |   MSA ms |  dense ms | dense / MSA")
    for r in result["rows"]:
        msa, dense = r.get("msa", {}), r.get("dense", {})
        cell = lambda x: (f"{x['ms']:8.1f}" if x.get("fits") else "time cap" if  # noqa: E731
                          x.get("over_time_cap") else "  no fit") if x else "       -"
        ratio = f"{dense['ms'] / msa['ms']:8.2f}" if msa.get("fits") and dense.get("fits") \
            else "       -"
        print(f"{r['memory_tokens']:>13} | {cell(msa)} | {cell(dense)} | {ratio}")
    for m, s in result["slopes"].items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"log-log slope {m:5}: {fmt(s['all'])} over all sizes, {fmt(s['last3'])} over "
              "the last three")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="", help="write the figures as JSON here too")
    p.add_argument("--recipe_steps", type=int, default=8)
    p.add_argument("--recipe_queries", type=int, default=128,
                   help="synthetic questions built per recipe (the batches are drawn from them)")
    p.add_argument("--skip_recipes", action="store_true")
    p.add_argument("--skip_scaling", action="store_true")
    p.add_argument("--max_tokens", type=int, default=65536)
    p.add_argument("--doc_tokens", type=int, default=128, help="tokens per memory document")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ram_cap_gb", type=float, default=6.0,
                   help="a step needing more temporary memory (XLA's estimate) does not fit")
    p.add_argument("--time_cap_s", type=float, default=60.0,
                   help="a method stops doubling after a step slower than this")
    a = p.parse_args(argv)
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "jax": jax.__version__, "devices": str(jax.devices()),
                       "load_start": os.getloadavg()}, "args": vars(a)}
    def save(scaling_result=None):
        if scaling_result is not None:
            out["scaling"] = scaling_result
        if a.out:
            out["machine"]["load_now"] = os.getloadavg()
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            atomic_write_bytes(a.out, json.dumps(out, indent=1).encode())

    if not a.skip_recipes:
        out["recipes"] = []
        for name in RECIPES:
            r = recipe_throughput(name, a.recipe_steps, a.recipe_queries)
            out["recipes"].append(r)
            save()
            print(f"{name}: batch {r['batch']}, {r['ms_per_step']:.0f} ms/step (median of "
                  f"{r['warm_steps']} warm), {r['tokens_per_s']:,.0f} tokens/s "
                  f"({r['padded_tokens_per_s']:,.0f} with pads)", flush=True)
    if not a.skip_scaling:
        print_table(scaling(a, save))
    out["machine"]["load_end"] = os.getloadavg()
    print(f"load average: start {out['machine']['load_start']}, end {out['machine']['load_end']}")
    save()
    return out


if __name__ == "__main__":
    main()
