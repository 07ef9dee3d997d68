"""What the commands print: model and bank summaries, routed documents, routing recall.

Plain functions returning lines (or dicts for --json_out), so `ask`, `info` and `demo` print the
same tables the same way.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


def show(text: str, limit: int = 100) -> str:
    """A one-line, quoted, escaped, truncated rendering of model output."""
    if not text:
        return "(empty)"
    out = repr(text)
    return out if len(out) <= limit else out[:limit - 4] + "...'"


def num(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def size(n: int) -> str:
    """Bytes with a readable unit."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def param_count(cfg) -> int:
    """Parameters implied by a config (from the checkpoint name table; nothing is loaded)."""
    from msa_jax.convert.names import entries

    return sum(math.prod(e.hf_shape) for e in entries(cfg))


def bytes_per_memory_token(cfg, dtype: str) -> dict[str, float]:
    """Bank bytes per document token at full chunks: routing keys, content K + V (R·K·H / P
    values each)."""
    per_chunk = len(cfg.msa.router_layers) * cfg.num_kv_heads * cfg.head_dim \
        * np.dtype(_np_dtype(dtype)).itemsize
    return {"routing": per_chunk / cfg.msa.pooling_size,
            "content": 2 * per_chunk / cfg.msa.pooling_size}


def _np_dtype(name: str):
    import jax.numpy as jnp

    return jnp.dtype(name)


def model_lines(cfg, where: str | None = None, tokenizer=None) -> list[str]:
    kind = "MSA (Qwen3 backbone + router)" if cfg.is_msa else "Qwen3"
    lines = [f"model        {kind}" + (f" at {where}" if where else ""),
             f"shape        {cfg.num_layers} layers, D={cfg.hidden_size}, {cfg.num_heads} heads "
             f"({cfg.num_kv_heads} KV) x H={cfg.head_dim}, MLP {cfg.intermediate_size}, "
             f"vocab {cfg.vocab_size}",
             f"parameters   {param_count(cfg):,} (stored {cfg.param_dtype}, compute {cfg.dtype}, "
             f"kernels {cfg.kernel_implementation})"]
    if cfg.is_msa:
        m = cfg.msa
        per_token = bytes_per_memory_token(cfg, cfg.dtype)
        layers = ",".join(map(str, m.router_layers))
        lines += [f"router       layers {layers}; pooling P={m.pooling_size}; "
                  f"top-k {m.top_k_docs} documents; prefix {m.prefix_len} tokens; "
                  f"{'cosine' if m.inference_cosine else 'scaled dot'} scores",
                  f"memory cost  {num(per_token['routing'])} B/token routing tier, "
                  f"{num(per_token['content'])} B/token content tier ({cfg.dtype})"]
    tok = "none (pass token ids)" if tokenizer is None else type(tokenizer).__name__ \
        + f" ({tokenizer.vocab_size} ids)"
    lines.append(f"tokenizer    {tok}")
    return lines


def bank_lines(bank, where: str | None = None) -> list[str]:
    """Counts and bytes per tier of a memory bank, with bytes per memory token."""
    spec, tiers = bank.spec, bank.tier_bytes()
    tokens = max(bank.num_tokens, 1)
    lines = [f"bank         {bank.num_docs} documents, {bank.num_tokens:,} tokens, "
             f"{bank.num_chunks:,} pooled chunks x {spec.num_router_layers} router layers"
             + (f" at {where}" if where else ""),
             f"chunk        P={spec.pooling_size} tokens -> [K={spec.num_kv_heads}, "
             f"H={spec.head_dim}] {spec.dtype}"
             + (f" (routing tier {spec.routing_dtype})" if spec.routing_dtype else "")
             + f" per router layer; model {spec.fingerprint}",
             f"  {'tier':<9}{'holds':<40}{'bytes':>14}  {'bytes/memory token':>18}"]
    holds = {"routing": "routing keys: scanned for every question",
             "content": "pooled K, V: read for top-k documents"}
    for name in ("routing", "content"):
        lines.append(f"  {name:<9}{holds[name]:<40}{tiers[name]:>14,}  "
                     f"{tiers[name] / tokens:>18.1f}")
    total = sum(tiers.values())
    lines.append(f"  {'total':<9}{'':<40}{total:>14,}  {total / tokens:>18.1f}")
    return lines


def routing_lines(choices: Sequence, references: Iterable[str] = (), indent: str = "") -> list[str]:
    """One line per router layer: the chosen documents (best first) with scores; * = reference."""
    refs = set(references)
    lines = []
    for c in choices:
        docs = "  ".join(f"[{d}]{'*' if d in refs else ''} {s:.4f}"
                         for d, s in zip(c.docs, c.scores))
        lines.append(f"{indent}layer {c.layer:>2}: {docs or '(no documents)'}")
    return lines


def question_routing(answer):
    """The routing of the question itself: the single pass, or the first Memory Interleave round."""
    if answer.answer_routing is not None:
        return answer.answer_routing
    return answer.rounds[0].routing if answer.rounds else []


def recall(choices: Sequence, references: Sequence[str]) -> dict | None:
    """Routing recall@k of one question: the share of its reference documents among the routed
    ones, over the union of router layers and per layer. None without references."""
    refs = set(references)
    if not refs:
        return None
    union = set().union(*(c.docs for c in choices)) if choices else set()
    return {"union": len(refs & union) / len(refs),
            "per_layer": {c.layer: len(refs & set(c.docs)) / len(refs) for c in choices}}


def recall_lines(recalls: Sequence[dict], k: int) -> list[str]:
    """Mean routing recall@k over questions."""
    if not recalls:
        return []
    union = sum(r["union"] for r in recalls) / len(recalls)
    layers = sorted(recalls[0]["per_layer"])
    mean = {layer: sum(r["per_layer"][layer] for r in recalls) / len(recalls) for layer in layers}
    per = "  ".join(f"layer {layer}: {value:.2f}" for layer, value in mean.items())
    return [f"routing recall@{k} over {len(recalls)} questions: {union:.2f} (union of router "
            f"layers); per layer  {per}"]


def answer_lines(answer, references: Sequence[str] = (), indent: str = "  ") -> list[str]:
    """Rounds (Memory Interleave) or the single routed pass, then the answer."""
    lines = []
    if answer.answer_routing is not None:
        lines.append(f"{indent}routed documents (question -> top-k per router layer):")
        lines += routing_lines(answer.answer_routing, references, indent + "  ")
    for i, r in enumerate(answer.rounds, 1):
        lines.append(f"{indent}round {i}: generated {show(r.generated, 70)}; requested "
                     f"{r.requested_ids or 'none'}; injected {r.injected_ids or 'none'}")
        lines += routing_lines(r.routing, references, indent + "  ")
    lines.append(f"{indent}answer: {show(answer.text)}")
    return lines


def answer_record(question: str, answer, references: Sequence[str] = (),
                  query_id: str | None = None, seconds: float | None = None) -> dict:
    """A JSON-ready record of one answer (for --json_out)."""
    def layers(choices):
        return [{"layer": c.layer, "documents": list(c.docs),
                 "scores": [float(s) for s in c.scores]} for c in choices]

    record = {"id": query_id, "question": question, "answer": answer.text,
              "reference_ids": list(references),
              "routing": layers(question_routing(answer)),
              "rounds": [{"generated": r.generated, "requested_ids": r.requested_ids,
                          "injected_ids": r.injected_ids, "routing": layers(r.routing)}
                         for r in answer.rounds]}
    rec = recall(question_routing(answer), references)
    if rec is not None:
        record["recall"] = {"union": rec["union"],
                            "per_layer": {str(k): v for k, v in rec["per_layer"].items()}}
    if seconds is not None:
        record["seconds"] = round(seconds, 3)
    return record
