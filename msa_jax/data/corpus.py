"""Documents for the memory bank, and the corpus files they come from.

A corpus is an ordered list of `Document`s, each either text (tokenized later) or token ids.
`iter_corpus` streams a corpus so a 100M-token bank never has to sit in memory as Python objects;
`load_corpus` is the list version. Accepted inputs, chosen by what the path is:

- `*.jsonl`: one record per line. A record is an object with the text under `text` (or `contents`
  / `content`) or token ids under `tokens` (or `input_ids`), an optional id under `id` (or
  `doc_id` / `_id`) and an optional `title` (prepended to the text as "title\\n"). A bare string or
  a bare list of ints is also a record. Blank lines are skipped. A record without an id gets its
  0-based record number (blank lines not counted), the same id the reference gives list items.
- a folder: every `*.txt` and `*.md` file below it (recursively, sorted by relative path, entries
  whose name starts with "." skipped); id = the relative path without extension ("a/b" for
  a/b.txt); text = the file's content, which must be utf-8.
- the reference's memory files: `*.pkl` / `*.pickle` or `*.json` holding a list of strings (id =
  the index), a list of records as in JSONL, or a dict {id: text}. Pickles are read with a
  restricted unpickler that only allows plain lists, dicts, strings and ints: a pickle naming any
  other class or function is refused, so loading a corpus never runs code from the file.

Every problem raises `CorpusError` naming the file, the line / item / key and the document id.
A document whose text is only whitespace counts as empty.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from typing import Any, Iterable, Iterator

from msa_jax.data.records import (CorpusError, IdRegistry, as_id, decode_utf8, iter_file_records,
                                  pick, require_exists)

TEXT_KEYS = ("text", "contents", "content")
TOKEN_KEYS = ("tokens", "input_ids")
ID_KEYS = ("id", "doc_id", "_id")
TEXT_FILE_SUFFIXES = (".txt", ".md")


@dataclasses.dataclass(frozen=True)
class Document:
    """One memory document: an id and exactly one of `text` or `tokens` (non-empty).

    `tokens` may be given as any sequence of non-negative ints (numpy arrays included); it is
    stored as a tuple of Python ints.
    """

    id: str
    text: str | None = None
    tokens: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise CorpusError(f"document id must be a non-empty string, got {self.id!r}")
        if (self.text is None) == (self.tokens is None):
            raise CorpusError(f"document {self.id!r}: set exactly one of text and tokens")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise CorpusError(f"document {self.id!r}: text must be a string, "
                                  f"got {type(self.text).__name__}")
            if not self.text.strip():
                raise CorpusError(f"document {self.id!r} is empty")
        else:
            object.__setattr__(self, "tokens", _token_tuple(self.tokens, self.id))

    @property
    def is_tokenized(self) -> bool:
        return self.tokens is not None


def _token_tuple(tokens: Any, doc_id: str) -> tuple[int, ...]:
    if isinstance(tokens, (str, bytes)):
        raise CorpusError(f"document {doc_id!r}: tokens must be a list of ints, got a string")
    try:
        types = set(map(type, tokens))
        out = tuple(map(operator.index, tokens))
    except TypeError:
        raise CorpusError(f"document {doc_id!r}: tokens must be a list of ints") from None
    if bool in types:
        raise CorpusError(f"document {doc_id!r}: tokens must be ints, not booleans")
    if not out:
        raise CorpusError(f"document {doc_id!r} is empty")
    if min(out) < 0:
        raise CorpusError(f"document {doc_id!r}: token ids must be non-negative, got {min(out)}")
    return out


def document_from_record(value: Any, default_id: str, where: str) -> Document:
    """A `Document` from a decoded record (object, string or token list); errors name `where`."""
    title = None
    if isinstance(value, str):
        ident, text, tokens = default_id, value, None
    elif isinstance(value, (list, tuple)):
        ident, text, tokens = default_id, None, value
    elif isinstance(value, dict):
        ident, text, tokens, title = _parse_object(value, default_id, where)
    else:
        raise CorpusError(f"{where}: expected an object, a string or a list of token ids, "
                          f"got {type(value).__name__}")
    try:
        if text is not None and title:
            if not text.strip():  # a title alone does not make a document
                raise CorpusError(f"document {ident!r} is empty")
            text = f"{title}\n{text}"
        return Document(ident, text=text, tokens=tokens)
    except CorpusError as e:
        raise CorpusError(f"{where}: {e}") from None


def _parse_object(record: dict, default_id: str, where: str):
    text_key, text = pick(record, TEXT_KEYS)
    token_key, tokens = pick(record, TOKEN_KEYS)
    id_key, ident = pick(record, ID_KEYS)
    ident = default_id if id_key is None else as_id(ident, where, f"{id_key!r}")
    if text_key is None and token_key is None:
        raise CorpusError(f"{where}: record {ident!r} has neither text nor tokens "
                          f"(expected one of {', '.join(TEXT_KEYS + TOKEN_KEYS)})")
    if text_key is not None and token_key is not None:
        raise CorpusError(f"{where}: record {ident!r} has both {text_key!r} and {token_key!r}; "
                          "give text or tokens, not both")
    if text_key is not None and not isinstance(text, str):
        raise CorpusError(f"{where}: record {ident!r}: {text_key!r} must be a string, "
                          f"got {type(text).__name__}")
    if token_key is not None and not isinstance(tokens, list):
        raise CorpusError(f"{where}: record {ident!r}: {token_key!r} must be a list of ints, "
                          f"got {type(tokens).__name__}")
    title = record.get("title")
    if title is not None:
        if not isinstance(title, str):
            raise CorpusError(f"{where}: record {ident!r}: 'title' must be a string")
        if token_key is not None:
            raise CorpusError(f"{where}: record {ident!r}: 'title' needs text, not tokens")
    return ident, text, tokens, title


def _iter_file(path: str) -> Iterator[tuple[str, Document]]:
    for where, default_id, value in iter_file_records(path, allow_pickle=True, allow_dict=True):
        yield where, document_from_record(value, default_id, where)


def _text_files(root: str) -> list[str]:
    """Relative posix paths of the *.txt / *.md files below `root`, sorted; hidden names skipped."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in TEXT_FILE_SUFFIXES:
                rel = os.path.relpath(os.path.join(folder, name), root)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _iter_directory(root: str) -> Iterator[tuple[str, Document]]:
    for rel in _text_files(root):
        where = os.path.join(root, rel)
        with open(where, "rb") as f:
            text = decode_utf8(f.read(), where)
        yield where, document_from_record(text, os.path.splitext(rel)[0], where)


def iter_corpus(path: str | os.PathLike) -> Iterator[Document]:
    """Stream the documents of a corpus file or folder, in order (see the module docstring).

    JSONL is read one line at a time; duplicate ids are detected as the stream goes (only the ids
    and their positions are kept). Raises `CorpusError` at the end if nothing was found.
    """
    path = os.fspath(path)
    require_exists(path)
    ids = IdRegistry("document")
    source = _iter_directory(path) if os.path.isdir(path) else _iter_file(path)
    for where, doc in source:
        ids.add(doc.id, where)
        yield doc
    if not len(ids):
        looked_for = " (looked for *.txt and *.md files)" if os.path.isdir(path) else ""
        raise CorpusError(f"{path} contains no documents{looked_for}")


def load_corpus(path: str | os.PathLike) -> list[Document]:
    """All documents of a corpus file or folder, in order (see the module docstring)."""
    return list(iter_corpus(path))


def save_corpus(documents: Iterable[Document], path: str | os.PathLike) -> int:
    """Write documents as JSONL (`id` plus `text` or `tokens`); returns the number written.

    The file reads back with `load_corpus` to equal documents. Streams, so `documents` may be a
    generator such as `synthetic_token_corpus`.
    """
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            record = {"id": doc.id}
            if doc.text is not None:
                record["text"] = doc.text
            else:
                record["tokens"] = list(doc.tokens)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
