"""Scores of one answer against its `evalset.EvalItem`, and their means.

- document-id exact match: the ids the model wrote over all Memory Interleave rounds (parsed as
  interleave parses them, `interleave.requested_ids`) name exactly the relevant documents;
- answer exact match: equal after `normalize` (lowercase, punctuation and the articles a / an /
  the dropped, whitespace collapsed);
- router recall@k per router layer: step i of an item's chain is routed in interleave round i
  (the question, then the last injected text); recall@k is the fraction of steps whose relevant
  document is among that round's first k routed documents (a step without a round scores 0).
  An answer without interleave (`Answer.answer_routing`) is scored on its one routing: the
  fraction of the chain among its first k. k larger than the routed documents (the model's
  top_k_docs) counts what was routed.
"""

from __future__ import annotations

import re
import string
from typing import Iterable, Sequence

import numpy as np

from msa_jax.inference.interleave import Answer
from msa_jax.inference.memory_generate import LayerChoice

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def answer_match(predicted: str, answer: str) -> bool:
    return normalize(predicted) == normalize(answer)


def doc_id_match(requested: Iterable[str], relevant: Sequence[str]) -> bool:
    return set(requested) == set(relevant)


def _hits(choices: Sequence[LayerChoice], relevant: Sequence[str], k: int) -> dict[int, float]:
    return {c.layer: len(set(c.docs[:k]) & set(relevant)) / len(relevant) for c in choices}


def router_recall(answer: Answer, relevant: Sequence[str], ks: Sequence[int] = (1, 2)
                  ) -> dict[str, float]:
    """{"recall@k/layer{L}": value} for one answer (see the module docstring)."""
    out = {}
    for k in ks:
        if answer.answer_routing is not None:
            per_layer = _hits(answer.answer_routing, relevant, k)
        else:
            steps = [_hits(r.routing, [doc], k) for r, doc in zip(answer.rounds, relevant)]
            layers = sorted({layer for s in steps for layer in s})
            per_layer = {layer: sum(s.get(layer, 0.0) for s in steps) / len(relevant)
                         for layer in layers}
        out.update({f"recall@{k}/layer{layer}": v for layer, v in per_layer.items()})
    return out


def score_answer(item, answer: Answer, ks: Sequence[int] = (1, 2)) -> dict[str, float]:
    """doc_id_match, answer_match (0 / 1) and router recall of one answer to `item`."""
    requested = [d for r in answer.rounds for d in r.requested_ids]
    out = {"doc_id_match": float(doc_id_match(requested, item.relevant_ids)),
           "answer_match": float(answer_match(answer.text, item.answer))}
    return out | router_recall(answer, item.relevant_ids, ks)


def summarize(items: Sequence, scores: Sequence[dict[str, float]]) -> dict[str, dict]:
    """Means of the scores: over all items ("all") and per hop count ("hops=1", "hops=2")."""
    groups = {"all": list(range(len(items)))}
    for i, item in enumerate(items):
        groups.setdefault(f"hops={item.hops}", []).append(i)
    out = {}
    for name, members in groups.items():
        keys = sorted({k for i in members for k in scores[i]})
        out[name] = {k: float(np.mean([scores[i].get(k, 0.0) for i in members])) for k in keys}
        out[name]["count"] = len(members)
    return out
