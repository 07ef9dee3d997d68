"""Training samples (docs/training_data.md): documents, a question, the relevant ids, a target.

A `Sample` is one retrieval step of MSA's generative retrieval (docs/msa.md §5-§6): the model
sees the sample's documents as memory and the question (plus, from the second step of a
multi-hop chain on, the text injected by earlier rounds, `history`), and learns to write the
target: the ids of the relevant documents in the `[id]` form, ending the round. With an
`answer`, it then writes the answer (see `msa_jax.training.packing` for the token layout).

Files are JSONL, one sample per line:
  {"id": "q7.1", "documents": [{"id": "12", "text": "..."}, {"id": "40", "tokens": [5, 9]}],
   "question": "...", "relevant_ids": ["12"], "target": "[12]<|object_ref_end|>",
   "answer": "amber", "history": [["[3]<|object_ref_end|>", "[3]. ...\\n<|object_ref_end|>"]]}
`target`, `answer` and `history` are optional. A document record is read as in corpus files
(`text`/`contents`/`content` or `tokens`/`input_ids`, an id under `id`/`doc_id`/`_id`).

Every problem raises `SampleError` naming the sample (and the file and line when read from one):
no documents, repeated document ids, a relevant id that is not among the documents.

API (stable; the trainer relies on it): `Sample`, `SampleError`, `load_samples`,
`save_samples`, `retrieval_target`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Sequence

from msa_jax.data.corpus import Document, document_from_record
from msa_jax.data.records import CorpusError, iter_jsonl, require_exists
from msa_jax.errors import InputError
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.utils import atomic_write_bytes


class SampleError(InputError):
    """A training sample that cannot be used; the message names the sample (and file, line).
    An `msa_jax.errors.MSAError`: bad input, reported by `msa-jax train` in one line (exit 1)."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training sample.

    documents: the memory of this sample, in order (in-sample document d = documents[d - 1]).
    relevant_ids: ids of the positives among `documents` (the routing loss's labels and, by
    default, the target). target: the retrieval response text; None = `retrieval_target`.
    answer: an optional answer written after the retrieval (packing adds the answer intro).
    history: earlier interleave rounds as (generated text, injected text) pairs, exactly what
    `msa_jax.inference.interleave.question_row` takes; the last injected text routes too.
    """

    id: str
    documents: tuple[Document, ...]
    question: str
    relevant_ids: tuple[str, ...]
    target: str | None = None
    answer: str | None = None
    history: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise SampleError(f"sample id must be a non-empty string, got {self.id!r}")
        name = f"sample {self.id!r}"
        object.__setattr__(self, "documents", tuple(self.documents))
        object.__setattr__(self, "relevant_ids", tuple(self.relevant_ids))
        object.__setattr__(self, "history", tuple(tuple(h) for h in self.history))
        if not self.documents:
            raise SampleError(f"{name} has no documents")
        if not all(isinstance(d, Document) for d in self.documents):
            raise SampleError(f"{name}: documents must be msa_jax.data.Document objects")
        ids = [d.id for d in self.documents]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise SampleError(f"{name}: repeated document ids {repeated}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise SampleError(f"{name}: the question is empty or not a string")
        missing = [r for r in self.relevant_ids if r not in set(ids)]
        if missing:
            raise SampleError(f"{name}: relevant id(s) {missing} are not among its documents")
        if len(set(self.relevant_ids)) != len(self.relevant_ids):
            raise SampleError(f"{name}: repeated relevant ids {list(self.relevant_ids)}")
        if self.target is None and not self.relevant_ids and self.answer is None:
            raise SampleError(f"{name} has neither relevant ids, a target nor an answer: "
                              "nothing to learn")
        for field in ("target", "answer"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise SampleError(f"{name}: {field} must be a string, got {type(value).__name__}")
        if not all(len(h) == 2 and all(isinstance(x, str) for x in h) for h in self.history):
            raise SampleError(f"{name}: history must be (generated, injected) string pairs")

    @property
    def doc_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.documents)


def retrieval_target(relevant_ids: Sequence[str], tpl: PromptTemplate = PromptTemplate(),
                     last: bool = False) -> str:
    """The generative-retrieval response: "[4][9]" then the round end (`<|object_ref_end|>`),
    or `<End-of-Retrieve>` when `last` (PromptTemplate.retrieval_response)."""
    return tpl.retrieval_response(relevant_ids, last)


def sample_to_record(sample: Sample) -> dict[str, Any]:
    docs = [{"id": d.id, "text": d.text} if d.text is not None
            else {"id": d.id, "tokens": list(d.tokens)} for d in sample.documents]
    record: dict[str, Any] = {"id": sample.id, "documents": docs, "question": sample.question,
                              "relevant_ids": list(sample.relevant_ids)}
    for field in ("target", "answer"):
        if getattr(sample, field) is not None:
            record[field] = getattr(sample, field)
    if sample.history:
        record["history"] = [list(h) for h in sample.history]
    return record


def sample_from_record(value: Any, default_id: str, where: str) -> Sample:
    """A `Sample` from a decoded JSON object; errors name `where` and the sample id."""
    if not isinstance(value, dict):
        raise SampleError(f"{where}: expected a JSON object, got {type(value).__name__}")
    ident = str(value.get("id", default_id))
    name = f"{where}: sample {ident!r}"
    unknown = sorted(set(value) - {"id", "documents", "question", "relevant_ids", "target",
                                   "answer", "history"})
    if unknown:
        raise SampleError(f"{name}: unknown field(s) {unknown}")
    records = value.get("documents")
    if not isinstance(records, list):
        raise SampleError(f"{name}: 'documents' must be a list of document records")
    relevant = value.get("relevant_ids", [])
    if not isinstance(relevant, list) or not all(isinstance(r, (str, int)) for r in relevant):
        raise SampleError(f"{name}: 'relevant_ids' must be a list of ids")
    try:
        docs = [document_from_record(r, str(i), f"{name}, document {i}")
                for i, r in enumerate(records)]
        return Sample(ident, tuple(docs), value.get("question"), tuple(map(str, relevant)),
                      value.get("target"), value.get("answer"),
                      tuple(map(tuple, value.get("history", ()))))
    except CorpusError as e:
        raise SampleError(str(e)) from None
    except SampleError as e:
        raise SampleError(f"{where}: {e}") from None
    except TypeError:
        raise SampleError(f"{name}: 'history' must be a list of [generated, injected] "
                          "pairs") from None


def load_samples(path: str | os.PathLike) -> list[Sample]:
    """All samples of a JSONL file; sample ids must be unique (an error names the repeated one)."""
    path = os.fspath(path)
    try:
        require_exists(path)
        samples, seen = [], {}
        for where, default_id, value in iter_jsonl(path):
            sample = sample_from_record(value, default_id, where)
            if sample.id in seen:
                raise SampleError(f"{where}: sample id {sample.id!r} repeats {seen[sample.id]}")
            seen[sample.id] = where
            samples.append(sample)
    except CorpusError as e:
        raise SampleError(str(e)) from None
    return samples


def save_samples(samples: Iterable[Sample], path: str | os.PathLike) -> int:
    """Write samples as JSONL (atomically); `load_samples` reads back equal samples."""
    lines = [json.dumps(sample_to_record(s), ensure_ascii=False) + "\n" for s in samples]
    atomic_write_bytes(os.fspath(path), "".join(lines).encode("utf-8"))
    return len(lines)
