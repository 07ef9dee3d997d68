"""Real-text distractor documents (a haystack) with needles inserted at seeded places.

The text is what no one here wrote and what every machine has once the project is installed:
the docstrings of the Python standard library and of packages `pip install msa-jax` brings
(`SOURCES`), read from their `.py` files with `ast` (nothing is imported), in a fixed order
(sources as listed, files in sorted order), each distinct docstring once. Measured on Python
3.11 with this project's dependencies: about 14 MB of distinct docstrings (stdlib 2.2, numpy
1.7, scipy 5.1, jax 2.0, jaxlib 0.6, flax 0.6, orbax 0.6, optax 0.4, grain 0.1); cut into
documents of 64-512 tokens that is 12.7M byte-tokenizer tokens in 44,623 documents, read in
about 90 s on the 2-core build machine (fewer tokens with a BPE tokenizer). A 100M-token
haystack therefore repeats the text about 8 times, each time cut differently.
The exact text depends on the installed versions, so a haystack is reproducible on one
environment, not across versions.

`haystack` cuts the text, words joined by single spaces, into documents of a token length drawn
uniformly from an inclusive range (`count_tokens`, default the utf-8 byte count = the byte
tokenizer's length); words holding a prompt special token (`<|...|>`) or longer than a document
are dropped, and so is a cut document that names a synthetic person (First I. Last), so no
needle key occurs in the real text. When the text runs out before `num_tokens`, it is cut again
from the start with another seed (another cut of the same text) and a warning says so. The
documents stream (one at a time; the text is never all in memory). Deterministic given the
arguments (and the installed packages). A leaf: no JAX.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import re
import sysconfig
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from msa_jax.data.corpus import Document
from msa_jax.data.synthetic import FIRST_NAMES, INITIALS, LAST_NAMES
from msa_jax.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("stdlib", "numpy", "scipy", "jax", "jaxlib", "flax", "optax", "orbax", "grain")
_SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages"}
_SYNTHETIC_PERSON = re.compile(r"\b(?:%s) (?:%s)\. (?:%s)\b" % (
    "|".join(FIRST_NAMES), "|".join(INITIALS), "|".join(LAST_NAMES)))
_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def utf8_length(text: str) -> int:
    """Tokens of `text` in the byte tokenizer (special tokens aside): its utf-8 bytes."""
    return len(text.encode("utf-8"))


def _roots(name: str) -> list[str]:
    if name == "stdlib":
        return [sysconfig.get_paths()["stdlib"]]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"haystack source {name!r} is not an installed package")
    return sorted(spec.submodule_search_locations)


def source_files(sources: Sequence[str] = SOURCES) -> Iterator[str]:
    """The `.py` files of `sources`, in order (sorted within each)."""
    for name in sources:
        for root in _roots(name):
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
                yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


def docstrings(sources: Sequence[str] = SOURCES) -> Iterator[str]:
    """Each distinct docstring of the sources' modules, classes and functions (files that do
    not parse are skipped)."""
    seen = set()
    for path in source_files(sources):
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, _DOCSTRING_OWNERS):
                text = ast.get_docstring(node)
                digest = text and hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
                if text and digest not in seen:
                    seen.add(digest)
                    yield text


def _cut(texts: Iterable[str], rng: np.random.Generator, token_range: tuple[int, int],
         count: Callable[[str], int]) -> Iterator[str]:
    """Documents of `count` tokens in `token_range`, of the texts' words in order."""
    low, high = token_range
    target, words, used = int(rng.integers(low, high + 1)), [], 0
    for text in texts:
        for word in text.split():
            cost = count(word) + bool(words)  # the joining space
            if "<|" in word or cost > high:
                continue
            if used + cost > target and words:
                doc = " ".join(words)
                if low <= count(doc) <= high and not _SYNTHETIC_PERSON.search(doc):
                    yield doc
                target, words, used = int(rng.integers(low, high + 1)), [], 0
                cost = count(word)
            words.append(word)
            used += cost


def _real_documents(texts: Callable[[], Iterable[str]], num_tokens: int,
                    token_range: tuple[int, int], seed: int,
                    count: Callable[[str], int]) -> Iterator[tuple[str, int]]:
    """(text, tokens) of real documents until `num_tokens` tokens, re-cut when exhausted."""
    produced, cut = 0, 0
    while produced < num_tokens:
        if cut:
            log.warning("haystack: the real text ran out after %d tokens; cut %d re-cuts it "
                        "with another seed", produced, cut + 1)
        before = produced
        for doc in _cut(texts(), np.random.default_rng([seed, cut]), token_range, count):
            n = count(doc)
            yield doc, n
            produced += n
            if produced >= num_tokens:
                return
        if produced == before:
            raise ConfigError(f"the haystack text holds no document of {token_range} tokens")
        cut += 1


def haystack(num_tokens: int, needles: Sequence[Document] = (), *,
             token_range: tuple[int, int] = (64, 512), seed: int = 0,
             count_tokens: Callable[[str], int] = utf8_length, first_id: int | None = None,
             sources: Sequence[str] = SOURCES,
             texts: Callable[[], Iterable[str]] | None = None) -> Iterator[Document]:
    """Real-text documents of at least `num_tokens` tokens in all (the needles come on top),
    with `needles` (e.g. the fact documents of `make_needle_task`, ids kept) each inserted once
    at a seeded token offset. Real documents are numbered from `first_id` (default: one past
    the largest integer needle id, else 0). `texts` replaces the docstrings of `sources`
    (a callable returning an iterable of texts, called once per cut)."""
    low, high = token_range
    if not 1 <= low <= high:
        raise ConfigError(f"token_range must satisfy 1 <= low <= high, got {token_range}")
    if num_tokens < 1:
        raise ConfigError(f"num_tokens must be >= 1, got {num_tokens}")
    source = texts or (lambda: docstrings(sources))
    yield from _with_needles(_real_documents(source, num_tokens, token_range, seed, count_tokens),
                             needles, num_tokens, seed, first_id)


def _with_needles(stream: Iterable[tuple[str, int]], needles: Sequence[Document], num_tokens: int,
                  seed: int, first_id: int | None) -> Iterator[Document]:
    """Documents of `stream` ((text, tokens) pairs) numbered from `first_id` (default: one past
    the largest integer needle id, else 0), each needle inserted once at a seeded token offset
    in [0, num_tokens)."""
    ids = [d.id for d in needles]
    if len(set(ids)) != len(ids):
        raise ConfigError("haystack: repeated needle ids")
    if first_id is None:
        first_id = 1 + max((int(i) for i in ids if i.isdigit()), default=-1)
    rng = np.random.default_rng([seed, 2 ** 31])  # the needles' places, apart from the cuts
    places = rng.integers(0, num_tokens, size=len(needles))
    pending = [needles[i] for i in np.lexsort((rng.permutation(len(needles)), places))]
    places = np.sort(places).tolist()
    produced = 0
    for i, (text, n) in enumerate(stream):
        while pending and places[0] <= produced:
            places.pop(0)
            yield pending.pop(0)
        doc_id = str(first_id + i)
        if doc_id in ids:
            raise ConfigError(f"haystack: distractor id {doc_id!r} is a needle's; pass a "
                              "larger first_id")
        yield Document(doc_id, text=text)
        produced += n
    yield from pending


def synthetic_haystack(num_tokens: int, needles: Sequence[Document] = (), *,
                       people: Sequence[int] | None = None, seed: int = 0,
                       count_tokens: Callable[[str], int] = utf8_length,
                       first_id: int | None = None, block: int = 4096) -> Iterator[Document]:
    """Synthetic fact documents (`make_needle_task`'s distractors, 2-5 facts each) of at least
    `num_tokens` tokens in all, with `needles` inserted as in `haystack`. `people` restricts the
    persons the distractors name: pass the TRAINING persons (`EntitySplit().people("train")`)
    and no distractor states a fact about, or names, an evaluation entity, so every evaluation
    answer keeps its one source. Generated `block` documents at a time (streaming)."""
    from msa_jax.data.synthetic import make_needle_task

    if num_tokens < 1:
        raise ConfigError(f"num_tokens must be >= 1, got {num_tokens}")

    def stream():
        produced = 0
        for j in range(2 ** 31):
            docs, _ = make_needle_task(block, 0, seed=int(np.random.SeedSequence(
                [seed, j]).generate_state(1)[0]), people=people)
            for d in docs:
                n = count_tokens(d.text)
                yield d.text, n
                produced += n
                if produced >= num_tokens:
                    return

    yield from _with_needles(stream(), needles, num_tokens, seed, first_id)
