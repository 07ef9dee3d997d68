"""How the routing tier's precision changes routing: one float32 encoding of a memory, the same
pooled keys stored as float32, bfloat16 and int8 routing tiers, and questions routed by the
model's own stage-2 prefill (training.evaluate's scoring pass, on the view `ask` builds). Per
tier dtype and memory size, against float32: top-k overlap (k = the model's top_k_docs, and
top-1 agreement), and the document-score error (max and mean |Δ|, also relative to the spread
(std) of the float32 scores). Router layers pooled.

- default: a random tiny-msa model (byte tokenizer), random documents, questions that are
  16-token spans of them;
- `--model=DIR` (a trained model, e.g. models/msa-tiny-demo): held-out single-hop questions of
  the synthetic task over a memory of held-out fact documents (training.tasks.make_eval_set,
  one hard negative per question, persons never seen in training), and also each tier's
  recall@k of the question's document.

    PYTHONPATH=. python benchmarks/memory/tier_precision.py --docs 256,1024,4096
    PYTHONPATH=. python benchmarks/memory/tier_precision.py --model=models/msa-tiny-demo \
        --docs 2000,8000 --questions 64
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

import msa_jax
from msa_jax.inference.generate import left_pad, prompt_positions
from msa_jax.inference.memory_generate import ROUTING, QueryRow
from msa_jax.memory.bank import BankSpec, MemoryBank
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.training.evaluate import _doc_scores, eval_inputs, target_ranks
from msa_jax.training.tasks import make_eval_set
from tests.models import byte_model

TIERS = (("float32", ""), ("bfloat16", "bfloat16"), ("int8", "int8"))  # (label, routing_dtype)


def _corpus(n: int, rng) -> list[DocInput]:
    return [DocInput(f"d{i}", tuple(int(t) for t in rng.integers(32, 250, rng.integers(40, 120))))
            for i in range(n)]


def _prefix_bank(full: MemoryBank, n: int, routing_dtype: str) -> MemoryBank:
    """The first n documents of `full` (float32) in a bank whose routing tier is routing_dtype."""
    spec = BankSpec(**{**full.spec.__dict__, "routing_dtype": routing_dtype})
    bank = MemoryBank(spec, full.prefix_k, full.prefix_v)
    chunks = full.doc_chunk_offset[n] if n < full.num_slots else full.num_chunks
    tiers = [full.tier(t)[:, :chunks] for t in ("routing_keys", "content_k", "content_v")]
    bank.append(full.doc_ids[:n], [full.doc_tokens[s] for s in range(n)], [None] * n,
                full.doc_num_chunks[:n], *tiers)
    return bank


def _scores(model, bank: MemoryBank, rows: list[QueryRow]) -> np.ndarray:
    """[L, B, M] document scores of every router layer, by the model's stage-2 prefill."""
    cfg = model.cfg
    tokens, mask = left_pad([r.tokens for r in rows], max(len(r.tokens) for r in rows),
                            cfg.pad_token_id or 0)
    roles, _ = left_pad([[x + 2 for x in r.roles] for r in rows], tokens.shape[1], 0)
    positions = prompt_positions(mask, cfg.msa.query_offset)
    out = _doc_scores(cfg, model.params, bank.view(unit_keys=cfg.msa.inference_cosine),
                      jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v),
                      jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(positions),
                      jnp.asarray((roles == ROUTING + 2) & (mask > 0)))
    return np.stack([np.asarray(s)[:, :bank.num_slots] for s in out])


def _compare(ref: np.ndarray, got: np.ndarray, k: int) -> dict:
    """ref, got [L, B, M] -> overlap of the top-k sets, top-1 agreement, score errors."""
    top = lambda s, k: np.argsort(-s, axis=-1, kind="stable")[..., :k]  # noqa: E731
    a, b = top(ref, k), top(got, k)
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(a.reshape(-1, k),
                                                               b.reshape(-1, k))])
    err = np.abs(got - ref)
    spread = ref.std(axis=-1, keepdims=True)
    return {"overlap": overlap, "top1": np.mean(a[..., 0] == b[..., 0]), "max": err.max(),
            "mean": err.mean(), "rel": (err / spread).mean()}


def _random_task(model, sizes, n_questions, rng):
    """Random documents; per size, questions that are 16-token spans of its documents."""
    docs = _corpus(sizes[-1], rng)
    per_size = {}
    for n in sizes:
        rows, targets = [], []
        for p in rng.integers(0, n, n_questions):
            toks = docs[p].tokens
            start = int(rng.integers(0, len(toks) - 16))
            rows.append(QueryRow.build((toks[start:start + 16], ROUTING)))
            targets.append(int(p))
        per_size[n] = (rows, targets)
    return docs, per_size


def _eval_task(model, sizes, n_questions, seed):
    """Held-out fact documents (the largest size's memory; smaller sizes are its prefixes, so
    every question's document is placed first) and their questions."""
    ev = make_eval_set(n_questions, sizes[-1], hops=1, hard_negatives=1, seed=seed + 1)
    docs, questions = eval_inputs(ev, model.tokenizer, model.template)
    slot = {d.id: i for i, d in enumerate(docs)}
    needed = {slot[q.target] for q in questions}
    if needed and max(needed) >= sizes[0]:
        docs = [docs[i] for i in sorted(needed)] + [d for i, d in enumerate(docs)
                                                    if i not in needed]
        slot = {d.id: i for i, d in enumerate(docs)}
    rows = [q.row for q in questions]
    targets = [slot[q.target] for q in questions]
    return docs, {n: (rows, targets) for n in sizes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", default="256,1024,4096", help="memory sizes (documents)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--model", default="", help="a trained model's folder (default: random)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.docs.split(","))
    rng = np.random.default_rng(args.seed)
    model = msa_jax.from_pretrained(args.model) if args.model else byte_model()
    k = model.cfg.msa.top_k_docs
    if args.model:
        docs, tasks = _eval_task(model, sizes, args.questions, args.seed)
        what = f"{args.model}; {args.questions} held-out single-hop questions"
    else:
        docs, tasks = _random_task(model, sizes, args.questions, rng)
        what = f"random tiny-msa; {args.questions} questions (16-token spans of random documents)"
    full = encode_documents(model.cfg, model.params, docs, dtype="float32", show_progress=False)
    print(f"{what}; {len(model.cfg.msa.router_layers)} router layers, K="
          f"{model.cfg.num_kv_heads} H={model.cfg.head_dim}; top-k = {k}; all vs the float32 tier")
    print(f"{'docs':>6} {'tokens':>8} {'tier':>9} {'B/chunk':>8} {'top-k overlap':>14} "
          f"{'top-1 same':>11} {'max |Δs|':>10} {'mean |Δs|':>10} {'mean |Δs|/std':>14} "
          f"{'recall@1':>9} {f'recall@{k}':>9}")
    for n in sizes:
        rows, targets = tasks[n]
        banks = {label: _prefix_bank(full, n, r) for label, r in TIERS}
        ref = _scores(model, banks["float32"], rows)
        tokens = sum(len(d.tokens) for d in docs[:n])
        for label, _ in TIERS:
            bank = banks[label]
            got = _scores(model, bank, rows)
            c = _compare(ref, got, k)
            ranks = np.stack([target_ranks(g, np.asarray(targets)) for g in got])  # [L, B]
            per_chunk = bank.tier_bytes()["routing"] // max(bank.num_chunks, 1)
            print(f"{n:>6} {tokens:>8} {label:>9} {per_chunk:>8} {c['overlap']:>14.4f} "
                  f"{c['top1']:>11.4f} {c['max']:>10.2e} {c['mean']:>10.2e} {c['rel']:>14.2e} "
                  f"{np.mean(ranks < 1):>9.3f} {np.mean(ranks < k):>9.3f}")


if __name__ == "__main__":
    main()
