"""Reading the raw records of corpus and query files: JSONL, JSON and restricted pickles.

Every reader yields `(where, default_id, value)`: `where` names the file and the line, item or key
("docs.jsonl, line 4"), `default_id` is the id a record without its own gets (the 0-based record
number, blank lines not counted, or the key of a dict) and `value` is the decoded record. Every
problem raises `CorpusError` with the file and the position.
The JSONL reader streams one line at a time, so a corpus never has to fit in memory as text.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, Iterator

from msa_jax.errors import CorpusError, parse_json

Record = tuple[str, str, Any]

JSONL_SUFFIXES = (".jsonl",)
JSON_SUFFIXES = (".json",)
PICKLE_SUFFIXES = (".pkl", ".pickle")

# The only globals a memory pickle may name. Plain lists, dicts, strings and ints have their own
# pickle opcodes and never reach `find_class`; naming these constructors is harmless, so it is
# allowed. Anything else (a class, `os.system`, numpy) is refused before it can be called.
_SAFE_GLOBALS = frozenset({("builtins", "list"), ("builtins", "dict"), ("builtins", "str"),
                           ("builtins", "int")})


def suffix(path: str) -> str:
    """Lower-case extension of `path`, with the dot ('.jsonl')."""
    return os.path.splitext(path)[1].lower()


def require_exists(path: str) -> None:
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file or directory")


def decode_utf8(raw: bytes, where: str, *, bom: bool = True) -> str:
    """`raw` as utf-8 text (a leading byte-order mark dropped if `bom`); errors name `where`."""
    try:
        return raw.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{where}: not valid utf-8 ({e.reason} at byte {e.start})") from None


def iter_jsonl(path: str) -> Iterator[Record]:
    """One JSON value per non-blank line; decoded line by line (utf-8, a leading BOM allowed)."""
    index = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}, line {lineno}"
            line = decode_utf8(raw, where, bom=lineno == 1)
            if not line.strip():
                continue
            value = parse_json(line, where, CorpusError, at_line=False)
            yield where, str(index), value
            index += 1


def read_json(path: str) -> Any:
    """The whole file as one JSON value."""
    with open(path, "rb") as f:
        raw = f.read()
    return parse_json(decode_utf8(raw, path), path, CorpusError,
                      extra_data_hint="(a file of one JSON value per line must be named .jsonl)")


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global except builtins list/dict/str/int, so no code can run on load."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only builtins list, dict, str and int are allowed")


def read_pickle(path: str) -> Any:
    """A pickle holding only plain lists, dicts, strings and ints (see `_RestrictedUnpickler`)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as e:
        raise CorpusError(f"{path}: unsafe or corrupt pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise CorpusError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None


def iter_container(path: str, value: Any, *, allow_dict: bool) -> Iterator[Record]:
    """Records of a JSON/pickle top-level value: list items (id = index) or dict entries (id =
    key)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield f"{path}, item {i}", str(i), item
    elif allow_dict and isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}, key {key!r}"
            yield where, as_id(key, where, "key"), item
    else:
        expected = "a list or a dict" if allow_dict else "a list"
        raise CorpusError(f"{path}: expected {expected} at the top level, "
                          f"got {type(value).__name__}")


def iter_file_records(path: str, *, allow_pickle: bool, allow_dict: bool) -> Iterator[Record]:
    """Dispatch on the extension: .jsonl streams; .json (and .pkl/.pickle if allowed) load whole."""
    ext = suffix(path)
    if ext in JSONL_SUFFIXES:
        yield from iter_jsonl(path)
    elif ext in JSON_SUFFIXES:
        yield from iter_container(path, read_json(path), allow_dict=allow_dict)
    elif allow_pickle and ext in PICKLE_SUFFIXES:
        yield from iter_container(path, read_pickle(path), allow_dict=allow_dict)
    else:
        known = JSONL_SUFFIXES + JSON_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
        raise CorpusError(f"{path}: unsupported file type {ext or '(none)'!r}; "
                          f"expected one of {', '.join(known)}")


def pick(record: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    """The first of `keys` present in `record` (and its value), or (None, None)."""
    for key in keys:
        if key in record:
            return key, record[key]
    return None, None


def as_id(value: Any, where: str, what: str = "id") -> str:
    """A record id: a non-empty string, or an int written in decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{where}: {what} must be a string or an int, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise CorpusError(f"{where}: {what} is empty")
    return text


class IdRegistry:
    """Remembers where each id was first seen, to report duplicates with both places."""

    def __init__(self, kind: str):
        self._kind = kind
        self._seen: dict[str, str] = {}

    def add(self, ident: str, where: str) -> None:
        first = self._seen.get(ident)
        if first is not None:
            raise CorpusError(f"{where}: duplicate {self._kind} id {ident!r} (first at {first})")
        self._seen[ident] = where

    def __len__(self) -> int:
        return len(self._seen)
