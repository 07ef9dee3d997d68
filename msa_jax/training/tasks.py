"""Synthetic training tasks that need no download (docs/training_data.md).

Built on `msa_jax.data.synthetic.make_needle_task`: facts hidden among distractor documents,
single-hop and two-hop chains, hard negatives that share part of the key with the positive.

- A multi-hop chain becomes ONE SAMPLE PER RETRIEVAL STEP, as in the paper: step 1 = the
  question -> the first document's id; step 2 = the question plus the injected text of the
  first document (the interleave `history`) -> the second document's id. A step's routing
  labels (`relevant_ids`) are its document and the ones injected before it: step 2 routes with
  the first document's text, so that document is not a negative there. With `with_answer`, a
  last step per chain retrieves nothing more (`<End-of-Retrieve>`) and writes the answer.
- Entities (persons) are split between training and evaluation by `EntitySplit`: a training
  corpus names only training persons, an evaluation corpus only held-out ones, and
  `make_retrieval_samples(split="train")` checks every text it produced for held-out names.
- `make_eval_set`: held-out questions over a large memory (10^4-10^5 documents) for the
  trainer's periodic large-memory recall evaluation.

API (stable; the trainer relies on it): `EntitySplit`, `make_retrieval_samples`,
`make_eval_set`, `EvalSet`, `check_held_out`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from msa_jax.data.corpus import Document
from msa_jax.data.queries import Query
from msa_jax.data.synthetic import FACTS_PER_DOC, PERSON_SHAPE, make_needle_task, person_index
from msa_jax.errors import ConfigError
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.training.samples import Sample, SampleError, retrieval_target

PERSON = re.compile(r"[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+")
NUM_PEOPLE = int(np.prod(PERSON_SHAPE))


@dataclasses.dataclass(frozen=True)
class EntitySplit:
    """Persons held out for evaluation: a seeded `eval_fraction` of all 21504 persons."""

    eval_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"EntitySplit.eval_fraction must be in (0, 1), got "
                             f"{self.eval_fraction}")

    def people(self, split: str) -> np.ndarray:
        """Sorted person indices of `split` ("train" or "eval")."""
        order = np.random.default_rng(self.seed).permutation(NUM_PEOPLE)
        n_eval = max(1, int(round(self.eval_fraction * NUM_PEOPLE)))
        if split == "eval":
            return np.sort(order[:n_eval])
        if split == "train":
            return np.sort(order[n_eval:])
        raise ConfigError(f"split must be 'train' or 'eval', got {split!r}")


def _texts(sample: Sample) -> list[str]:
    out = [sample.question, sample.answer or ""] + [x for h in sample.history for x in h]
    return out + [d.text for d in sample.documents if d.text is not None]


def check_held_out(samples: Sequence[Sample], held_out: Sequence[int]) -> None:
    """SampleError naming the first sample whose text names a held-out person."""
    held = set(np.asarray(held_out).tolist())
    for sample in samples:
        for text in _texts(sample):
            for name in PERSON.findall(text):
                try:
                    index = person_index(name)
                except ValueError:  # not a synthetic person: never held out
                    continue
                if index in held:
                    raise SampleError(f"sample {sample.id!r} names the held-out entity {name!r}")


def _injected(doc_id: str, texts: dict[str, str], tpl: PromptTemplate) -> str:
    """What Memory Interleave appends after a round that retrieved `doc_id`."""
    return tpl.injected.format(id=doc_id, text=texts[doc_id]) + tpl.round_end


def _chain_samples(prefix: str, query: Query, docs: tuple[Document, ...], texts: dict[str, str],
                   tpl: PromptTemplate, with_answer: bool,
                   answer_routing: bool = True) -> list[Sample]:
    """One sample per retrieval step of `query`'s chain (plus the answer step; with
    `answer_routing=False` it has no relevant ids: no routing positive, nothing read)."""
    chain, history, out = query.reference_ids, [], []
    for hop, doc_id in enumerate(chain):
        target = retrieval_target((doc_id,), tpl)
        # routing labels: this hop's document and the ones already injected (the routing query
        # holds the last injected text, so its own document scores high: not a negative)
        out.append(Sample(f"{prefix}{query.id}.{hop}", docs, query.question, chain[:hop + 1],
                          target, history=tuple(history)))
        history.append((target, _injected(doc_id, texts, tpl)))
    if with_answer:
        out.append(Sample(f"{prefix}{query.id}.answer", docs, query.question,
                          chain if answer_routing else (), tpl.end_of_retrieve,
                          query.answers[0], tuple(history)))
    return out


def _renamed(docs: tuple[Document, ...], query: Query, rng: np.random.Generator,
             digits: int) -> tuple[tuple[Document, ...], Query]:
    """`docs` under fresh random ids of 1..`digits` digits (distinct; lengths uniform), and
    `query` pointing at the renamed chain: ids are labels, so a model learns to copy any id
    rather than the few of a training corpus."""
    taken, mapping = set(), {}
    for d, n in zip(docs, rng.integers(1, digits + 1, size=len(docs)).tolist()):
        new = str(int(rng.integers(10 ** (n - 1) if n > 1 else 0, 10 ** n)))
        while new in taken:
            new = str(int(rng.integers(0, 10 ** digits)))
        taken.add(new)
        mapping[d.id] = new
    docs = tuple(Document(mapping[d.id], text=d.text) for d in docs)
    return docs, dataclasses.replace(query, reference_ids=tuple(mapping[r]
                                                                for r in query.reference_ids))


def _samples(documents: list[Document], queries: list[Query], corpus_docs: int, hops: int,
             hard_negatives: int, docs_per_sample: int, seed: int, prefix: str,
             tpl: PromptTemplate, with_answer: bool, id_digits: int = 0,
             answer_routing: bool = True) -> list[Sample]:
    texts = {d.id: d.text for d in documents}
    per_query = hops * hard_negatives
    out = []
    for q, query in enumerate(queries):
        chain = list(query.reference_ids)
        negatives = [str(corpus_docs + q * per_query + j) for j in range(per_query)]
        n_distract = docs_per_sample - len(chain) - len(negatives)
        if n_distract < 0:
            raise ConfigError(f"docs_per_sample={docs_per_sample} cannot hold a chain of {hops} "
                             f"documents and {len(negatives)} hard negatives")
        if n_distract > corpus_docs - len(chain):
            raise ConfigError(f"a corpus of {corpus_docs} documents has too few distractors for "
                             f"docs_per_sample={docs_per_sample}")
        rng = np.random.default_rng([seed, q])
        drawn = rng.choice(corpus_docs, size=n_distract + len(chain), replace=False)
        distract = [i for i in map(str, drawn) if i not in chain][:n_distract]
        ids = chain + negatives + distract
        docs = tuple(documents[int(ids[i])] for i in rng.permutation(len(ids)))
        if id_digits:
            docs, query = _renamed(docs, query, rng, id_digits)
            texts = {d.id: d.text for d in docs}
        out += _chain_samples(prefix, query, docs, texts, tpl, with_answer, answer_routing)
    return out


def make_retrieval_samples(num_queries: int, *, hops: int = 1, docs_per_sample: int = 16,
                           hard_negatives: int = 0, corpus_docs: int | None = None,
                           split: str = "train", entities: EntitySplit = EntitySplit(),
                           seed: int = 0, with_answer: bool = False, id_digits: int = 0,
                           tpl: PromptTemplate = PromptTemplate(),
                           facts_per_doc: tuple[int, int] = FACTS_PER_DOC,
                           answer_routing: bool = True) -> list[Sample]:
    """Samples of `num_queries` fact questions, each over `docs_per_sample` documents: its
    chain, `hard_negatives` per hop, and distractors drawn from a corpus of `corpus_docs`
    fact documents (default num_queries * hops + docs_per_sample) naming only `split`'s
    persons. Sample ids are "{split}-{query}.{hop}" (and "{split}-{query}.answer").
    id_digits n > 0: every sample's documents get fresh random ids of 1..n digits (the model
    must copy an id of any length; see `_renamed`); 0 keeps the corpus ids.
    facts_per_doc: (low, high) facts per corpus document (`make_needle_task`); (1, 1) makes a
    needle document's value the only value its text states (an easier answer step).
    answer_routing: False gives the answer steps no relevant ids, so the routing loss does not
    train on them (their routing query holds the injected text, which matches its own document)
    and `optim.read="target"` reads no document for them.
    The same arguments always give the same samples.
    """
    if docs_per_sample < 1:
        raise ConfigError(f"docs_per_sample must be >= 1, got {docs_per_sample}")
    corpus_docs = num_queries * hops + docs_per_sample if corpus_docs is None else corpus_docs
    documents, queries = make_needle_task(corpus_docs, num_queries, seed=seed, hops=hops,
                                          people=entities.people(split),
                                          hard_negatives=hard_negatives,
                                          facts_per_doc=tuple(facts_per_doc))
    samples = _samples(documents, queries, corpus_docs, hops, hard_negatives, docs_per_sample,
                       seed, f"{split}-", tpl, with_answer, id_digits, answer_routing)
    if split == "train":
        check_held_out(samples, entities.people("eval"))
    return samples


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Held-out questions over a large memory.

    documents: the memory (every document of the evaluation corpus, hard negatives included);
    samples: the retrieval steps, each over its own few documents (for in-batch recall), with
    `relevant_ids` naming documents of `documents` (for recall among the whole memory).
    """

    documents: tuple[Document, ...]
    samples: tuple[Sample, ...]
    queries: tuple[Query, ...] = ()  # the questions with their answers and chains


def make_eval_set(num_queries: int, num_docs: int = 10_000, *, hops: int = 1,
                  docs_per_sample: int = 16, hard_negatives: int = 0,
                  entities: EntitySplit = EntitySplit(), seed: int = 1,
                  tpl: PromptTemplate = PromptTemplate(),
                  people: Sequence[int] | None = None) -> EvalSet:
    """`num_queries` held-out questions hidden in `num_docs` documents that name only held-out
    persons (never seen in training; the memory may be 10^5 documents). `people`: a subset of
    the held-out persons to draw from (default: all of them)."""
    held = entities.people("eval")
    if people is not None:
        people = np.unique(np.asarray(people, dtype=np.int64))
        if not np.isin(people, held).all():
            raise ConfigError("make_eval_set: people must be held-out persons "
                             "(entities.people('eval'))")
    documents, queries = make_needle_task(num_docs, num_queries, seed=seed, hops=hops,
                                          people=held if people is None else people,
                                          hard_negatives=hard_negatives)
    samples = _samples(documents, queries, num_docs, hops, hard_negatives, docs_per_sample,
                       seed, "eval-", tpl, False)
    return EvalSet(tuple(documents), tuple(samples), tuple(queries))
