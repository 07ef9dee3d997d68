"""Router recall on a large memory: encode many documents into a MemoryBank with the current
params, route held-out questions through the stage-2 prefill, rank each question's target.

In-batch recall (the train step's metric) ranks the positive among a sample's few documents and
says little about routing among 10^5 (docs/training-notes.md). Here the question is scored against
the whole bank by the inference path itself (`prefill_with_memory`, the model's inference score
rule). The target's rank is the number of *other* documents scoring strictly higher in the same
scoring pass: never compared with a score computed by a differently shaped matmul.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.config import ModelConfig
from msa_jax.errors import InputError
from msa_jax.inference.generate import bucket, left_pad, prompt_positions
from msa_jax.inference.interleave import PromptTemplate, question_row
from msa_jax.inference.memory_generate import ROUTING, QueryRow
from msa_jax.memory.bank import MemoryBank
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.model.cache import step_times
from msa_jax.model.query import MemoryView, prefill_with_memory, prefix_cache

RECALL_AT = (1, 5, 10)


@dataclasses.dataclass(frozen=True)
class EvalQuestion:
    row: QueryRow  # the query row inference routes with (ROUTING / CONTEXT roles)
    target: str  # id of its relevant document in the bank


@functools.partial(jax.jit, static_argnames=("cfg",))
def _doc_scores(cfg: ModelConfig, params, memory: MemoryView, prefix_k, prefix_v, tokens, mask,
                positions, routing):
    b, t = tokens.shape
    cache = prefix_cache(cfg, prefix_k, prefix_v, b, prefix_k.shape[1] + t)
    k_time, q_time = step_times(cache.index, mask)
    _, _, (infos, _) = prefill_with_memory(cfg, params, memory, cache, tokens, positions, k_time,
                                           q_time, routing, keep_doc_scores=True)
    return [info.doc_scores for info in infos if info is not None]  # per router layer [B, M]


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """scores [B, M] of one pass, targets [B] slots -> how many other documents score higher."""
    mine = scores[np.arange(len(targets)), targets][:, None]
    higher = scores > mine
    higher[np.arange(len(targets)), targets] = False
    return higher.sum(1)


def memory_recall(cfg: ModelConfig, params, questions: Sequence[EvalQuestion],
                  bank: MemoryBank, batch_size: int = 16) -> dict[str, float]:
    """{"eval/recall@k/layer{i}": fraction of questions whose target ranks < k} per router layer,
    and "eval/recall@k" for the last router layer (the one whose choice the answer reads last)."""
    slot = {d: s for s, d in enumerate(bank.doc_ids)}
    missing = [q.target for q in questions if q.target not in slot]
    if missing:
        raise InputError(f"eval question targets {missing[:3]} are not in the memory bank")
    view = bank.view(unit_keys=cfg.msa.inference_cosine)
    pk, pv = jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v)
    ranks = [[] for _ in cfg.msa.router_layers]
    for i in range(0, len(questions), batch_size):
        part = questions[i:i + batch_size]
        part = list(part) + [part[-1]] * (batch_size - len(part))  # one shape: one compilation
        length = bucket(max(len(q.row.tokens) for q in part))
        tokens, mask = left_pad([q.row.tokens for q in part], length, cfg.pad_token_id or 0)
        roles, _ = left_pad([[r + 2 for r in q.row.roles] for q in part], length, 0)
        routing = (roles == ROUTING + 2) & (mask > 0)
        positions = prompt_positions(mask, cfg.msa.query_offset)
        per_layer = _doc_scores(cfg, params, view, pk, pv, jnp.asarray(tokens),
                                jnp.asarray(mask), jnp.asarray(positions), jnp.asarray(routing))
        n = min(batch_size, len(questions) - i)
        targets = np.asarray([slot[q.target] for q in part[:n]])
        for r, scores in enumerate(per_layer):
            ranks[r].append(target_ranks(np.asarray(scores)[:n, :bank.num_slots], targets))
    out = {}
    for layer, rk in zip(cfg.msa.router_layers, ranks):
        rk = np.concatenate(rk)
        for k in RECALL_AT:
            out[f"eval/recall@{k}/layer{layer}"] = float(np.mean(rk < k))
    last = cfg.msa.router_layers[-1]
    for k in RECALL_AT:
        out[f"eval/recall@{k}"] = out[f"eval/recall@{k}/layer{last}"]
    return out


def eval_inputs(eval_set, tokenizer, template: PromptTemplate = PromptTemplate()
                ) -> tuple[list[DocInput], list[EvalQuestion]]:
    """A held-out `msa_jax.training.tasks.EvalSet` -> (memory documents wrapped as
    `MSAModel.encode_memory` wraps them, one question per sample: its inference query row and
    its first relevant document)."""
    docs = [DocInput(d.id, tuple(tokenizer.encode(template.format_document(d.id, d.text),
                                                  allow_special=True)), d.text)
            for d in eval_set.documents]
    questions = [EvalQuestion(question_row(tokenizer, template, s.question, s.history),
                              s.relevant_ids[0]) for s in eval_set.samples]
    return docs, questions


def evaluate(cfg: ModelConfig, params, docs: Sequence[DocInput],
             questions: Sequence[EvalQuestion], batch_size: int = 16) -> dict[str, float]:
    """Encode `docs` (the large memory) with `params`, then `memory_recall`."""
    bank = encode_documents(cfg, params, docs, show_progress=False)
    out = memory_recall(cfg, params, questions, bank, batch_size)
    out["eval/memory_docs"] = float(bank.num_docs)
    out["eval/memory_tokens"] = float(bank.num_tokens)
    return out
