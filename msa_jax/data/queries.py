"""Questions asked of the memory bank, in the reference's query-file format.

A query file is a JSON list or a JSONL file of objects:
- `query` (or `question`): the question text (required, non-empty);
- `reference_list` (or `reference_ids`): ids of the documents that hold the answer, as ints or
  strings (optional; repeated ids are kept once, in first-seen order);
- `answer` (or `answers`): a string or a list of strings (optional; ints are written in decimal);
- `id` (or `_id`): optional; default is the 0-based record number as a string.

Problems raise `CorpusError` naming the file, the line or item and the query id.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

from msa_jax.data.corpus import Document
from msa_jax.data.records import CorpusError, IdRegistry, as_id, iter_file_records, pick
from msa_jax.data.records import require_exists

QUESTION_KEYS = ("query", "question")
REFERENCE_KEYS = ("reference_list", "reference_ids")
ANSWER_KEYS = ("answer", "answers")
ID_KEYS = ("id", "_id")


@dataclasses.dataclass(frozen=True)
class Query:
    """A question, the ids of the documents that answer it and its accepted answers."""

    id: str
    question: str
    reference_ids: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise CorpusError(f"query id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise CorpusError(f"query {self.id!r}: the question is empty or not a string")
        for name in ("reference_ids", "answers"):
            value = getattr(self, name)
            if not isinstance(value, str):
                value = tuple(value)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise CorpusError(f"query {self.id!r}: {name} must be a sequence of non-empty "
                                  f"strings, got {value!r}")
            object.__setattr__(self, name, value)


def _strings(value: Any, where: str, key: str, *, single_ok: bool) -> list[str]:
    """A list of ids/answers from a str, an int or a list of them; errors name `where` and `key`."""
    if single_ok and isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise CorpusError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return [as_id(v, where, f"an entry of {key!r}") for v in value]


def query_from_record(value: Any, default_id: str, where: str) -> Query:
    """A `Query` from one decoded record; errors name `where` and the query id."""
    if not isinstance(value, dict):
        raise CorpusError(f"{where}: expected a query object, got {type(value).__name__}")
    id_key, ident = pick(value, ID_KEYS)
    ident = default_id if id_key is None else as_id(ident, where, repr(id_key))
    q_key, question = pick(value, QUESTION_KEYS)
    if q_key is None:
        raise CorpusError(f"{where}: query {ident!r} has no {' or '.join(QUESTION_KEYS)} field")
    if not isinstance(question, str) or not question.strip():
        raise CorpusError(f"{where}: query {ident!r}: {q_key!r} is empty or not a string")
    r_key, refs = pick(value, REFERENCE_KEYS)
    refs = [] if refs is None else _strings(refs, where, r_key, single_ok=False)
    a_key, answers = pick(value, ANSWER_KEYS)
    answers = [] if answers is None else _strings(answers, where, a_key, single_ok=True)
    return Query(ident, question, tuple(dict.fromkeys(refs)), tuple(answers))


def load_queries(path: str | os.PathLike) -> list[Query]:
    """All queries of a `.json` (list of objects) or `.jsonl` file, in order."""
    path = os.fspath(path)
    require_exists(path)
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a folder; queries come from a .json or .jsonl file")
    ids = IdRegistry("query")
    queries = []
    for where, default_id, value in iter_file_records(path, allow_pickle=False, allow_dict=False):
        query = query_from_record(value, default_id, where)
        ids.add(query.id, where)
        queries.append(query)
    if not queries:
        raise CorpusError(f"{path} contains no queries")
    return queries


def save_queries(queries: Iterable[Query], path: str | os.PathLike) -> int:
    """Write queries as JSONL in the reference's field names; returns the number written."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for q in queries:
            record = {"id": q.id, "query": q.question, "reference_list": list(q.reference_ids),
                      "answer": list(q.answers)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def missing_references(queries: Iterable[Query],
                       documents: Iterable[Document | str | None]) -> dict[str, list[str]]:
    """{query id: its reference ids that are not among `documents` (ids or Documents; None
    entries, deleted bank slots, are skipped)}, only for queries that have such ids."""
    known = {d.id if isinstance(d, Document) else d for d in documents} - {None}
    missing = {q.id: [r for r in q.reference_ids if r not in known] for q in queries}
    return {k: v for k, v in missing.items() if v}


def without_references(queries: Iterable[Query], missing: dict[str, list[str]]) -> list[Query]:
    """`queries` with the reference ids in `missing` (from `missing_references`) removed."""
    return [dataclasses.replace(q, reference_ids=tuple(
        r for r in q.reference_ids if r not in missing.get(q.id, ()))) for q in queries]


def check_references(queries: Iterable[Query], documents: Iterable[Document | str]) -> None:
    """Raise `CorpusError` naming the first query whose reference ids are not in `documents`."""
    for query_id, missing in missing_references(queries, documents).items():
        raise CorpusError(f"query {query_id!r} references documents not in the corpus: "
                          f"{', '.join(map(repr, missing))}")
