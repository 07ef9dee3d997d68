"""The benchmark's evaluation set: held-out questions, fixed by a seed and versioned.

    suite = build_eval_suite()                 # VERSION, seed 1: 40 single-hop, 20 two-hop
    suite.digest == DEFAULT_DIGEST             # the set every benchmark run of VERSION uses
    check_disjoint(suite, training_samples)    # InputError naming the first leak
    suite.save("out/eval_set.json")            # beside the benchmark output (atomic)

Questions come from `msa_jax.training.tasks.make_eval_set` over held-out persons only
(`EntitySplit`, the trainer's default split): single-hop questions from one half of the held-out
persons, two-hop from the other half, so no fact subject is stated by both corpora (each answer
keeps exactly one source in the combined memory). `documents` are exactly the needles (every
document states an answer or a chain's bridge): 80 documents, about 14K byte-tokenizer tokens
with the defaults, so they fit the benchmark's 16K-token row; the benchmark adds distractors.
Two-hop documents are renumbered after the single-hop ones (ids "0".."79").

`digest`: SHA-256 of the canonical JSON of the version, the settings, every item (id, hops,
question, answer, relevant ids) and every document (id, text). Changing the generator changes
the digest; the test pins DEFAULT_DIGEST, so a change must come with a new VERSION.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Sequence

import numpy as np

from msa_jax.data.corpus import Document
from msa_jax.data.synthetic import person_index
from msa_jax.errors import InputError, parse_json
from msa_jax.training.samples import Sample
from msa_jax.training.tasks import PERSON, EntitySplit, _texts, make_eval_set
from msa_jax.utils import atomic_write_bytes

VERSION = "msa-eval-v1"
# build_eval_suite()'s digest with the defaults (same on Python 3.11 / 3.12, numpy 2.4 / 2.5)
DEFAULT_DIGEST = "e34369f5accd823f5a463b37d05f158e900909b04823f1a07d2a74a0ba96d1cd"
# one fact: "The lucky boat of Lena K. Sato is amber." / "The mentor of X Y. Z is A B. C."
FACT = re.compile(r"The [a-z]+(?: [a-z]+)? of [A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+ is "
                  r"(?:[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+|\w+)\.")


@dataclasses.dataclass(frozen=True)
class EvalItem:
    id: str  # "1hop-3", "2hop-0"
    hops: int
    question: str
    answer: str
    relevant_ids: tuple[str, ...]  # chain order


@dataclasses.dataclass(frozen=True)
class EvalSuite:
    version: str
    settings: dict  # the builder's arguments
    items: tuple[EvalItem, ...]
    documents: tuple[Document, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "settings": self.settings,
                "items": [dataclasses.asdict(i) | {"relevant_ids": list(i.relevant_ids)}
                          for i in self.items],
                "documents": [{"id": d.id, "text": d.text} for d in self.documents]}

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike):
        """JSON with the digest, written atomically."""
        record = self.to_json() | {"digest": self.digest}
        atomic_write_bytes(os.fspath(path), json.dumps(record, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalSuite":
        """A saved suite; InputError naming the file if its digest does not match its content."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            record = parse_json(f.read(), path)
        try:
            suite = cls(record["version"], record["settings"],
                        tuple(EvalItem(i["id"], i["hops"], i["question"], i["answer"],
                                       tuple(i["relevant_ids"])) for i in record["items"]),
                        tuple(Document(d["id"], text=d["text"]) for d in record["documents"]))
            digest = record["digest"]
        except (KeyError, TypeError) as e:
            raise InputError(f"{path}: not an evaluation set ({e})") from None
        if suite.digest != digest:
            raise InputError(f"{path}: the evaluation set's digest {digest[:12]}... does not "
                             f"match its content ({suite.digest[:12]}...): it was edited")
        return suite


def build_eval_suite(single_hop: int = 40, two_hop: int = 20, *, seed: int = 1,
                     hard_negatives: int = 0,
                     entities: EntitySplit = EntitySplit()) -> EvalSuite:
    """The held-out evaluation set (see the module docstring)."""
    held = entities.people("eval")
    halves = np.array_split(np.random.default_rng(seed).permutation(held), 2)
    items, documents = [], []
    for hops, count, people in ((1, single_hop, halves[0]), (2, two_hop, halves[1])):
        if count == 0:
            continue
        held_out = make_eval_set(count, count * hops, hops=hops, docs_per_sample=hops,
                                 hard_negatives=hard_negatives, entities=entities, seed=seed,
                                 people=people)
        rename = {d.id: str(len(documents) + i) for i, d in enumerate(held_out.documents)}
        documents += [Document(rename[d.id], text=d.text) for d in held_out.documents]
        items += [EvalItem(f"{hops}hop-{q.id}", hops, q.question, q.answers[0],
                           tuple(rename[r] for r in q.reference_ids)) for q in held_out.queries]
    settings = {"single_hop": single_hop, "two_hop": two_hop, "seed": seed,
                "hard_negatives": hard_negatives, "eval_fraction": entities.eval_fraction,
                "split_seed": entities.seed}
    return EvalSuite(VERSION, settings, tuple(items), tuple(documents))


def _persons(texts: Sequence[str]) -> set[int]:
    out = set()
    for text in texts:
        for name in PERSON.findall(text):
            try:
                out.add(person_index(name))
            except ValueError:  # "First I. Last" but not a synthetic person
                pass
    return out


def leaks(suite: EvalSuite, samples: Sequence[Sample]) -> list[str]:
    """What of the suite occurs in the training samples' texts: its questions, its persons (every
    person its questions and documents name) and its facts (each "The ... is VALUE." sentence).
    Empty when the evaluation is clean."""
    training = "\n".join(t for s in samples for t in _texts(s))
    out = [f"question {i.id} {i.question!r}" for i in suite.items if i.question in training]
    texts = [i.question for i in suite.items] + [d.text for d in suite.documents]
    people = sorted(_persons(texts) & _persons([training]))
    out += [f"person #{p}" for p in people]
    out += [f"fact {f!r}" for d in suite.documents for f in FACT.findall(d.text) if f in training]
    return out


def check_disjoint(suite: EvalSuite, samples: Sequence[Sample]):
    """InputError naming the leaks (at most 3) if any of the suite occurs in `samples`."""
    found = leaks(suite, samples)
    if found:
        raise InputError(f"the evaluation set leaks into the training samples: "
                         f"{'; '.join(found[:3])} ({len(found)} in all)")


HAYSTACKS = ("synthetic", "real")


def memory_documents(kind: str, num_tokens: int, needles: Sequence[Document], count_tokens,
                     seed: int = 0, entities: EntitySplit = EntitySplit()) -> list[Document]:
    """The evaluation memory: `needles` among distractors of `num_tokens` tokens in all
    (`count_tokens(text)`: the model's tokenizer), "synthetic" fact documents naming only
    TRAINING persons (so no distractor touches an evaluation entity) or "real" text
    (msa_jax.data.haystack: Python docstrings); needles at seeded places."""
    from msa_jax.data import haystack as hs

    if kind == "synthetic":
        docs = hs.synthetic_haystack(num_tokens, needles, people=entities.people("train"),
                                     seed=seed, count_tokens=count_tokens)
    elif kind == "real":
        docs = hs.haystack(num_tokens, needles, seed=seed, count_tokens=count_tokens)
    else:
        raise InputError(f"haystack {kind!r}: expected one of {', '.join(HAYSTACKS)}")
    return list(docs)
