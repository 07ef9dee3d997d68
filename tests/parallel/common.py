"""What the memory-parallel tests share: the tiny model and corpus, a run, tie-aware comparison.

Also imported by the two-process worker (tests/parallel/two_process_worker.py), so that both
processes and the single-process reference see the same model, documents and questions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SEED = 0
NUM_DOCS = 40
BLOCK_TOKENS = 256  # explicit, so a half corpus is packed in blocks of the same size
MAX_NEW = 4
DUPLICATES = {30: 7, 31: 12, 35: 7}  # slot -> copied slot: exactly repeated documents (ties)


def corpus() -> list[list[int]]:
    rng = np.random.default_rng(SEED)
    docs = [rng.integers(4, 500, size=int(rng.integers(5, 60))).tolist() for _ in range(NUM_DOCS)]
    for slot, src in DUPLICATES.items():
        docs[slot] = list(docs[src])
    return docs


def question_rows(docs):
    from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow
    return [QueryRow.build((docs[7][:8], ROUTING), ([7, 8], CONTEXT)),
            QueryRow.build((docs[17][2:12], ROUTING), ([7], CONTEXT))]


def tiny_model():
    import msa_jax
    return msa_jax.MSAModel.random(msa_jax.preset("tiny-msa"), SEED)


@dataclasses.dataclass
class Result:
    tokens: list  # [row] new token ids
    slots: list  # [row][router layer] selected bank slots, descending score
    scores: list  # same shape, float
    logits: np.ndarray  # [B, V] next-token logits after the prefill

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "slots": self.slots, "scores": self.scores,
                "logits": self.logits.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Result":
        return cls(d["tokens"], d["slots"], d["scores"], np.asarray(d["logits"], np.float32))


def run(model, bank, rows, placement=None, unit_keys: bool = False) -> Result:
    """Prefill and decode `rows` against `bank` (on one device, or on `placement`), its view
    with `unit_keys` or not."""
    import jax.numpy as jnp
    from msa_jax.inference.memory_generate import generate_from_memory
    view = bank.view(unit_keys=unit_keys) if placement is None else placement.view(
        bank, unit_keys=unit_keys)
    select = None if placement is None else placement.select
    fetch = None if placement is None else placement.fetch
    new, pre = generate_from_memory(model.cfg, model.params, view, jnp.asarray(bank.prefix_k),
                                    jnp.asarray(bank.prefix_v), rows, MAX_NEW,
                                    select=select, fetch=fetch)
    slots = [[c.docs for c in row] for row in pre.choices]
    scores = [[c.scores for c in row] for row in pre.choices]
    return Result(new, slots, scores, np.asarray(pre.logits, np.float32))


def _runs(scores: list[float], tol: float) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive (descending) scores within tol of each other."""
    out, start = [], 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or abs(scores[i] - scores[i - 1]) > tol:
            out.append((start, i))
            start = i
    return out


def assert_same_choice(ref_slots, ref_scores, slots, scores, tol=1e-6, where=""):
    """Same selected documents up to ties: scores agree within tol position by position; inside
    a run of tied scores the set of documents agrees, except in a run cut off by k (the last one),
    where any of the tied documents may be kept."""
    assert len(slots) == len(ref_slots), f"{where}: {slots} vs {ref_slots}"
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=tol, err_msg=where)
    runs = _runs(ref_scores, tol)
    for start, end in runs[:-1]:
        assert sorted(slots[start:end]) == sorted(ref_slots[start:end]), \
            f"{where}: {slots} vs {ref_slots} (scores {ref_scores})"


def assert_same_first_tokens(ref: Result, tokens: list, logit_tol: float, where=""):
    """The first new token of each row, which the prefill logits decide: equal, and the
    reference's top-1 / top-2 margin is wider than 2 logit_tol, so logits within logit_tol cannot
    pick another. (Later tokens come from decode steps whose logits are not recorded: comparing
    them exactly between two different computations would be a guess, so they are not.)"""
    top2 = np.sort(ref.logits, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    assert (margin > 2 * logit_tol).all(), f"{where}: near-tie in the reference logits {margin}"
    assert [t[0] for t in tokens] == [t[0] for t in ref.tokens], \
        f"{where}: answers {tokens} vs {ref.tokens}"


def assert_same_result(ref: Result, got: Result, score_tol=1e-6, logit_tol=1e-5, where=""):
    """Two computations of the same answers (another device count, process count, placement):
    scores within score_tol with tie-aware choices, logits within logit_tol (float32
    reassociation), the first new tokens equal."""
    assert_same_first_tokens(ref, got.tokens, logit_tol, where)
    for b, (rs, rc, gs, gc) in enumerate(zip(ref.slots, ref.scores, got.slots, got.scores)):
        for layer, args in enumerate(zip(rs, rc, gs, gc)):
            assert_same_choice(*args, tol=score_tol, where=f"{where} row {b} router layer {layer}")
    np.testing.assert_allclose(got.logits, ref.logits, rtol=0, atol=logit_tol, err_msg=where)


def synthetic_bank(num_docs: int, seed: int = 1, templates: int = 6, max_chunks: int = 5,
                   dtype: str = "float32"):
    """A bank of small-integer tiers (shapes of tiny-msa: R 2, K 2, H 16) of `dtype` (small
    integers are exact in bfloat16 too), no model needed.
    Documents repeat `templates` distinct contents, so many scores tie exactly (integer
    arithmetic is exact in float32), at the top-k boundary too."""
    from msa_jax.memory.bank import BankSpec, MemoryBank
    rng = np.random.default_rng(seed)
    spec = BankSpec("synthetic", 2, 2, 16, 8, dtype)
    shapes = [int(c) for c in rng.integers(1, max_chunks + 1, size=templates)]
    shapes[0] = max_chunks  # so every bank built here has the same max_doc_chunks
    kinds = [{n: rng.integers(-2, 3, size=spec.chunk_shape(c)).astype(np.float32)
              for n in ("routing_keys", "content_k", "content_v")} for c in shapes]
    prefix = np.zeros((4, 3, 2, 16), np.float32)  # [L, Pf, K, H], unused here
    bank = MemoryBank(spec, prefix, prefix)
    picks = rng.integers(0, templates, size=num_docs)
    picks[0] = 0
    tiers = {n: np.concatenate([kinds[p][n] for p in picks], axis=1) for n in kinds[0]}
    bank.append([str(i) for i in range(num_docs)], [(1,)] * num_docs, [None] * num_docs,
                [shapes[p] for p in picks], tiers["routing_keys"], tiers["content_k"],
                tiers["content_v"])
    return bank


def integer_queries(batch: int = 3, tokens: int = 3, seed: int = 2):
    """Routing queries qr [B, T, N=4, H=16] of small integers; row 1 has no routing token."""
    rng = np.random.default_rng(seed)
    qr = rng.integers(-2, 3, size=(batch, tokens, 4, 16)).astype(np.float32)
    mask = np.ones((batch, tokens), bool)
    mask[1] = False
    return qr, mask


def valued_bank(values, chunks):
    """A bank (shapes of tiny-msa) where document d's routing keys are multiples of e_0: its
    chunks hold values[d] - chunks[d] + 1 .. values[d], so under dot scoring with a query of e_0
    (one_hot_queries) its score, chunk max, is exactly values[d] * H^-0.5 (small integers times a
    power of two: exact in float32)."""
    from msa_jax.memory.bank import BankSpec, MemoryBank
    spec = BankSpec("valued", 2, 2, 16, 8, "float32")
    keys = np.zeros(spec.chunk_shape(int(sum(chunks))), np.float32)
    at = 0
    for v, n in zip(values, chunks):
        keys[:, at:at + n, :, 0] = (v - n + 1 + np.arange(n))[None, :, None]
        at += n
    prefix = np.zeros((4, 3, 2, 16), np.float32)  # [L, Pf, K, H], unused here
    bank = MemoryBank(spec, prefix, prefix)
    bank.append([str(i) for i in range(len(values))], [(1,)] * len(values),
                [None] * len(values), list(chunks), keys, keys, keys)
    return bank


def one_hot_queries(batch: int = 2, tokens: int = 2):
    """Routing queries qr [B, T, N=4, H=16] = e_0 for every token and head; all tokens routing."""
    qr = np.zeros((batch, tokens, 4, 16), np.float32)
    qr[..., 0] = 1.0
    return qr, np.ones((batch, tokens), bool)


def np_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Oracle top-k ids of one row: descending score, ties to the lower slot (as lax.top_k)."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]
