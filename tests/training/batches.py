"""Small TrainBatch builders for the trainer tests (the data pipeline has its own tests).

A sample is laid out as the reference's training batch (tests/golden inputs.json `train`):
[template head | documents 1..M | question | template tail | response], documents with
document-wise positions, the question from len(head) + top_k on, labels on the response only.

`keyed_batch` is a retrieval task: document d holds a key token pair and a value token; the
question repeats the key of the positive document; the response is its value (4 times: a few labelled tokens per sample). A router that
learns to match keys routes the question to the positive (chance: 1 / M).
"""

from __future__ import annotations

import numpy as np

from msa_jax.config import ModelConfig
from msa_jax.training.losses import IGNORE


def _sample(cfg: ModelConfig, docs, question, response, length: int):
    head = list(cfg.msa.prefix_token_ids)
    tail = head[:2]
    tokens, pos, roles = list(head), list(range(len(head))), [-2] * len(head)
    for d, doc in enumerate(docs, start=1):
        tokens += doc
        pos += list(range(len(doc)))
        roles += [d] * len(doc)
    start = len(head) + cfg.msa.top_k_docs
    active = question + tail + response
    tokens += active
    pos += list(range(start, start + len(active)))
    roles += [0] * len(question) + [-2] * len(tail) + [-1] * len(response)
    labels = [IGNORE] * (len(tokens) - len(response)) + list(response)
    n = len(tokens)
    if n > length:
        raise ValueError(f"sample of {n} tokens does not fit length {length}")
    pad = length - n
    return dict(tokens=tokens + [0] * pad, positions=pos + [0] * pad, roles=roles + [0] * pad,
                mask=[1] * n + [0] * pad, labels=labels + [IGNORE] * pad)


def keyed_batch(cfg: ModelConfig, rng: np.random.Generator, batch: int, num_docs: int,
                doc_chunks: int = 1, length: int | None = None, vocab_low: int = 8):
    """Retrieval batch (numpy dict of TrainBatch fields + num_docs); keys and values are drawn
    from disjoint token ranges above `vocab_low`."""
    p = cfg.msa.pooling_size
    v = cfg.vocab_size
    keys = np.arange(vocab_low, v // 2)
    values = np.arange(v // 2, v)
    doc_len = doc_chunks * p
    length = length or (len(cfg.msa.prefix_token_ids) * 2 + num_docs * doc_len + 8)
    rows, doc_labels = [], np.zeros((batch, num_docs), np.int32)
    for b in range(batch):
        docs, keyset = [], []
        for _ in range(num_docs):
            key = list(rng.choice(keys, 2, replace=False))
            filler = list(rng.integers(vocab_low, v, doc_len - 3))
            docs.append(key + [int(rng.choice(values))] + filler)
            keyset.append(key)
        target = int(rng.integers(num_docs))
        doc_labels[b, target] = 1
        rows.append(_sample(cfg, [[int(t) for t in d] for d in docs],
                            [int(t) for t in keyset[target]], [int(docs[target][2])] * 4,
                            length))
    out = {k: np.asarray([r[k] for r in rows], np.int32) for k in rows[0]}
    out["doc_labels"] = doc_labels
    out["num_docs"] = num_docs
    return out
