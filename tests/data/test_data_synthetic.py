"""Synthetic tasks: deterministic per seed, and every answer sits in its referenced documents."""

import re
import types

import pytest

from msa_jax.data import (Document, check_references, make_corpus, make_needle_task,
                          synthetic_token_corpus)

# One fact: "The <attribute or relation> of <First I. Last> is <value or person>."
PERSON = r"[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+"
FACT = re.compile(rf"(The [a-z ]+ of {PERSON}) is ({PERSON}|[A-Za-z]+)\.")


def test_make_corpus_modes():
    text = make_corpus(20, (2, 4), seed=3)
    assert [d.id for d in text] == [str(i) for i in range(20)]
    for d in text:
        assert 2 <= len(FACT.findall(d.text)) <= 4  # sentences
    words = make_corpus(10, (3, 3), vocab=["alpha", "beta"], seed=3)
    assert all(len(d.text.split()) == 3 and set(d.text.split()) <= {"alpha", "beta"}
               for d in words)
    for vocab in [(5, 9), range(5, 9)]:
        tokens = make_corpus(10, (1, 6), vocab=vocab, seed=3)
        assert all(d.is_tokenized and 1 <= len(d.tokens) <= 6 and set(d.tokens) <= set(range(5, 9))
                   for d in tokens)
    for bad in [dict(doc_len_range=(0, 2)), dict(doc_len_range=(3, 2)), dict(vocab=[]),
                dict(vocab=(5, 5)), dict(vocab=range(0, 10, 2))]:
        with pytest.raises(ValueError):
            make_corpus(2, **{"doc_len_range": (1, 2), **bad})


@pytest.mark.parametrize("make", [
    lambda seed: make_corpus(30, seed=seed),
    lambda seed: make_corpus(30, (4, 9), vocab=(1, 100), seed=seed),
    lambda seed: make_needle_task(40, 10, seed=seed),
    lambda seed: make_needle_task(40, 10, seed=seed, hops=2),
    lambda seed: list(synthetic_token_corpus(5000, (10, 300), 1000, seed=seed)),
])
def test_deterministic_per_seed(make):
    assert make(7) == make(7)
    assert make(7) != make(8)


def _by_id(documents):
    return {d.id: d.text for d in documents}


def _stated_in(documents, sentence):
    return [d.id for d in documents if sentence in d.text]


def test_needle_one_hop():
    docs, queries = make_needle_task(200, 50, seed=1)
    check_references(queries, docs)
    assert len({q.reference_ids for q in queries}) == 50  # one needle per document
    for q in queries:
        adj, noun, person = re.fullmatch(r"What is the (\w+) (\w+) of (.+)\?", q.question).groups()
        (answer,) = q.answers
        assert q.reference_ids == tuple(_stated_in(docs, f"The {adj} {noun} of {person} is "))
        assert f"The {adj} {noun} of {person} is {answer}." in _by_id(docs)[q.reference_ids[0]]


def test_needle_two_hops():
    docs, queries = make_needle_task(200, 50, seed=2, hops=2)
    check_references(queries, docs)
    texts = _by_id(docs)
    for q in queries:
        adj, noun, rel, person = re.fullmatch(
            r"What is the (\w+) (\w+) of the (\w+) of (.+)\?", q.question).groups()
        first, second = q.reference_ids
        assert first != second
        hop1 = re.search(rf"The {rel} of {re.escape(person)} is ([^.]+ [A-Z]\. [^.]+)\.",
                         texts[first])
        assert hop1, (q, texts[first])
        bridge = hop1.group(1)
        assert _stated_in(docs, f"The {rel} of {person} is ") == [first]
        assert _stated_in(docs, f"The {adj} {noun} of {bridge} is ") == [second]
        assert f"The {adj} {noun} of {bridge} is {q.answers[0]}." in texts[second]


def test_needle_facts_are_unique_subjects():
    docs, _ = make_needle_task(300, 20, seed=4, hops=2, facts_per_doc=(1, 6))
    facts = [FACT.findall(d.text) for d in docs]
    assert all(1 <= len(f) <= 6 for f in facts)
    assert all(" ".join(f"{s} is {o}." for s, o in f) == d.text for f, d in zip(facts, docs))
    subjects = [s for f in facts for s, _ in f]
    assert len(subjects) == len(set(subjects))
    assert sum(" of the " not in s and s.split()[2] == "of" for s in subjects) > 0  # relations


def test_needle_errors():
    with pytest.raises(ValueError, match="hops must be 1 or 2"):
        make_needle_task(10, 2, hops=3)
    with pytest.raises(ValueError, match="need at least 12 documents"):
        make_needle_task(10, 6, hops=2)


def test_synthetic_token_corpus_streams_exact_total():
    stream = synthetic_token_corpus(10_000, 512, vocab_size=50, seed=0)
    assert isinstance(stream, types.GeneratorType)
    docs = list(stream)
    assert sum(len(d.tokens) for d in docs) == 10_000
    assert [len(d.tokens) for d in docs] == [512] * 19 + [10_000 - 19 * 512]
    assert [d.id for d in docs] == [str(i) for i in range(20)]
    assert all(isinstance(d, Document) and min(d.tokens) >= 1 and max(d.tokens) < 50 for d in docs)
    ranged = list(synthetic_token_corpus(3000, (1, 100), 10, seed=0, low=0))
    assert sum(len(d.tokens) for d in ranged) == 3000
    assert all(1 <= len(d.tokens) <= 100 for d in ranged)
    with pytest.raises(ValueError):
        next(synthetic_token_corpus(0))
    with pytest.raises(ValueError):
        next(synthetic_token_corpus(10, vocab_size=5, low=5))
