"""The scaling benchmark (issue 12): held-out questions as the memory grows 16K -> 100M tokens.

    python benchmarks/scaling.py                                  # 16K, 128K, 1M, synthetic
    python benchmarks/scaling.py --sizes=16K,128K,1M,10M --haystacks=synthetic,real
    python benchmarks/scaling.py --model=DIR --questions=20 --out=outputs/scaling

For every haystack ("synthetic": fact documents naming training persons only; "real": Python
docstrings, msa_jax.data.haystack) and memory size, the evaluation set's needles
(msa_jax.eval.evalset, versioned; held-out persons) sit among distractors of that many tokens
(the needles unchanged, the distractors of a smaller size a prefix of a larger one's). Per size:
encode time, bank bytes per tier, and per method, on the same questions:
- msa: Memory Interleave (generative retrieval: the model names ids, the system injects them),
  each round's id constrained to the documents that round routed (`ask(constrain_ids=True)`);
- msa-free: the same with ids decoded freely (the reference's decoding);
- msa-no-interleave: one routed pass, then the answer;
- bm25: BM25 retrieve-then-read (bm25s; top-k documents' text in the same model's context);
- dense: every memory document's text in the context (full causal attention over the memory),
  only up to --dense_max tokens (its cost grows quadratically; where it stops is printed);
- no-memory: the answer step with no document (size-independent; run once).
Metrics: router recall@1 / @k (per router layer, MSA), document-id exact match, answer exact
match, single-hop and two-hop apart; question latency (median, seconds). JSON and a PNG plot
(matplotlib) go to --out. Nothing here is a test: it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import msa_jax  # noqa: E402
from msa_jax.cli.commands.demo import bundled_model_path  # noqa: E402
from msa_jax.eval import bm25, score  # noqa: E402
from msa_jax.eval.evalset import build_eval_suite, memory_documents  # noqa: E402
from msa_jax.utils import atomic_write_bytes  # noqa: E402


def tokens(text: str) -> int:
    """'16K' -> 16384, '1M' -> 1048576, '100M' -> 104857600; plain integers as given."""
    units = {"K": 2 ** 10, "M": 2 ** 20}
    t = text.strip().upper()
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _mean(rows, key):
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else None


def summarize(rows: list[dict]) -> dict:
    """Means per hop group of every metric in rows (each row: one question, one method)."""
    out = {}
    for group, members in (("all", rows), ("hops=1", [r for r in rows if r["hops"] == 1]),
                           ("hops=2", [r for r in rows if r["hops"] == 2])):
        if members:
            keys = sorted({k for r in members for k in r if k not in ("id", "hops", "answer",
                                                                      "expected", "ids")})
            out[group] = {k: _mean(members, k) for k in keys} | {"count": len(members)}
    return out


def run_msa(model, bank, items, interleave: bool, k: int, constrain: bool = False) -> list[dict]:
    rows = []
    for it in items:
        t = time.perf_counter()
        answer = model.ask(it.question, bank, interleave=interleave, max_rounds=3,
                           max_new_tokens=16, answer_tokens=16, constrain_ids=constrain)
        dt = time.perf_counter() - t
        s = score.score_answer(it, answer, ks=(1, k))
        if not interleave:
            del s["doc_id_match"]  # no ids are generated without interleave
        rows.append({"id": it.id, "hops": it.hops, "latency_s": dt, "answer": answer.text,
                     "expected": it.answer, **s})
    return rows


def run_read(model, items, pick, texts) -> list[dict]:
    """Answer each item from the documents `pick(item)` names (BM25, dense, none)."""
    rows = []
    for it in items:
        t = time.perf_counter()
        ids = pick(it)
        text = bm25.read(model, it.question, ids, texts, answer_tokens=16)
        dt = time.perf_counter() - t
        chain = set(it.relevant_ids)
        rows.append({"id": it.id, "hops": it.hops, "latency_s": dt, "answer": text,
                     "expected": it.answer, "answer_match": float(score.answer_match(text,
                                                                                     it.answer)),
                     "recall@k": len(chain & set(ids)) / len(chain)})
    return rows


def one_size(model, dense_model, items, needles, kind: str, size: int, args) -> dict:
    tok = model.tokenizer
    t = time.perf_counter()
    docs = memory_documents(kind, size, needles, lambda s: len(tok.encode(s)), seed=args.seed)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    bank = model.encode_memory(docs, progress=True, routing_dtype=args.routing_dtype or None)
    encode_s = time.perf_counter() - t
    texts = {d.id: d.text for d in docs}
    k = model.cfg.msa.top_k_docs
    result = {"haystack": kind, "target_tokens": size, "memory_tokens": bank.num_tokens,
              "documents": len(docs), "corpus_build_s": build_s, "encode_s": encode_s,
              "encode_tokens_per_s": bank.num_tokens / encode_s, "tier_bytes": bank.tier_bytes(),
              "methods": {}}
    print(f"\n== {kind} {bank.num_tokens:,} tokens, {len(docs):,} documents: encoded in "
          f"{encode_s:.1f} s ({bank.num_tokens / encode_s:,.0f} tokens/s)", flush=True)
    methods = {"msa": lambda: run_msa(model, bank, items, True, k, constrain=True),
               "msa-free": lambda: run_msa(model, bank, items, True, k),
               "msa-no-interleave": lambda: run_msa(model, bank, items, False, k)}
    if "bm25" in args.methods:
        t = time.perf_counter()
        index = bm25.BM25Index.build(docs, total=len(docs))
        result["bm25_index_s"] = time.perf_counter() - t
        methods["bm25"] = lambda: run_read(model, items, lambda it: index.retrieve(it.question, k),
                                           texts)
    if "dense" in args.methods:
        if bank.num_tokens <= args.dense_max:
            every = [d.id for d in docs]
            dense_items = items[:args.dense_questions]
            methods["dense"] = lambda: run_read(dense_model, dense_items, lambda it: every,
                                                texts)
        else:
            result["dense_skipped"] = (f"{bank.num_tokens:,} memory tokens > --dense_max="
                                       f"{args.dense_max:,} (quadratic cost)")
    for name, fn in methods.items():
        if name not in args.methods:
            continue
        rows = fn()
        result["methods"][name] = {"summary": summarize(rows), "rows": rows,
                                   "median_latency_s": statistics.median(r["latency_s"]
                                                                         for r in rows)}
        s = result["methods"][name]["summary"]
        print(f"  {name:>18}: answer EM {s['all']['answer_match']:.3f} "
              + (f"(1-hop {s['hops=1']['answer_match']:.3f}, "
                 f"2-hop {s['hops=2']['answer_match']:.3f}) " if "hops=2" in s else "")
              + (f"ids EM {s['all']['doc_id_match']:.3f} " if "doc_id_match" in s["all"] else "")
              + f"latency {result['methods'][name]['median_latency_s']:.2f} s", flush=True)
    result["peak_rss_gib"] = rss_gib()
    return result


def plot(results: list[dict], path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in sorted({r["haystack"] for r in results}):
        rs = [r for r in results if r["haystack"] == kind]
        for name in ("msa", "msa-free", "msa-no-interleave", "bm25", "dense"):
            pts = [(r["memory_tokens"], r["methods"][name]["summary"]["all"]["answer_match"])
                   for r in rs if name in r["methods"]]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", label=f"{name} ({kind})")
    ax.set_xscale("log")
    ax.set_xlabel("memory tokens")
    ax.set_ylabel("answer exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=bundled_model_path())
    p.add_argument("--sizes", default="16K,128K,1M")
    p.add_argument("--haystacks", default="synthetic")
    p.add_argument("--methods", default="msa,msa-free,msa-no-interleave,bm25,dense,no-memory")
    p.add_argument("--questions", type=int, default=60, help="first N of the evaluation set "
                   "(40 single-hop, then 20 two-hop: a prefix keeps both kinds when N > 40)")
    p.add_argument("--dense_max", type=tokens, default=tokens("16K"))
    p.add_argument("--dense_questions", type=int, default=12)
    p.add_argument("--top_k", type=int, default=0, help="documents each router layer (and "
                   "BM25) selects; 0 = the model's top_k_docs")
    p.add_argument("--shared_selection", action="store_true", help="every router layer reads "
                   "the first router layer's documents (msa.shared_selection; on if the model's "
                   "config.json sets it)")
    p.add_argument("--routing_dtype", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/scaling")
    args = p.parse_args(argv)
    args.methods = args.methods.split(",")
    try:  # the plot comes last: a missing extra must not cost a run of minutes
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/scaling.py needs matplotlib for its plot: pip install -e '.[eval]'")
    os.makedirs(args.out, exist_ok=True)
    overrides = {"top_k_docs": args.top_k} if args.top_k else {}
    if args.shared_selection:
        overrides["shared_selection"] = True
    model = msa_jax.from_pretrained(args.model, msa_overrides=overrides)
    # dense reads the whole memory as one context: the same weights, with the position limit
    # raised to fit it (positions beyond the trained ones are the baseline's handicap, as for
    # any backbone read past its training length)
    dense_model = msa_jax.from_pretrained(
        args.model, max_position_embeddings=max(model.cfg.max_position_embeddings,
                                                2 * args.dense_max + 4096))
    suite = build_eval_suite()
    suite.save(os.path.join(args.out, "eval_set.json"))
    ones = [it for it in suite.items if it.hops == 1]
    twos = [it for it in suite.items if it.hops == 2]
    n1 = min(len(ones), max(args.questions - len(twos), args.questions // 2))
    items = ones[:n1] + twos[:max(0, args.questions - n1)]
    print(f"model {args.model}; evaluation set {suite.version} ({suite.digest[:12]}): "
          f"{sum(i.hops == 1 for i in items)} single-hop, {sum(i.hops == 2 for i in items)} "
          "two-hop questions", flush=True)
    record = {"model": args.model, "eval_set": {"version": suite.version,
                                                "digest": suite.digest},
              "machine": f"{os.cpu_count()} CPUs", "args": vars(args), "results": []}
    if "no-memory" in args.methods:
        rows = run_read(model, items, lambda it: [], {})
        record["no_memory"] = {"summary": summarize(rows), "rows": rows}
        print(f"  no memory: answer EM {record['no_memory']['summary']['all']['answer_match']:.3f}")
    for kind in args.haystacks.split(","):
        for size in map(tokens, args.sizes.split(",")):
            try:
                record["results"].append(one_size(model, dense_model, items,
                                                  list(suite.documents), kind, size, args))
            except MemoryError as e:
                record["results"].append({"haystack": kind, "target_tokens": size,
                                          "stopped": f"MemoryError: {e}"})
                print(f"  {kind} {size:,}: stopped by MemoryError ({e})")
            atomic_write_bytes(os.path.join(args.out, "scaling.json"),
                               json.dumps(record, indent=1).encode())
    done = [r for r in record["results"] if "methods" in r]
    if done:
        plot(done, os.path.join(args.out, "scaling.png"))
    print(f"\nwrote {os.path.join(args.out, 'scaling.json')} and scaling.png")


if __name__ == "__main__":
    main()
