"""The real-text haystack: deterministic, documents in the length range, needles once, and no
needle key (synthetic person) in the real text."""

import logging

import pytest

from msa_jax.data.haystack import haystack
from msa_jax.data.synthetic import make_needle_task
from msa_jax.data.tokenizer import ByteTokenizer
from msa_jax.errors import ConfigError
from msa_jax.eval import evalset

TOK = ByteTokenizer()
DOCS, QUERIES = make_needle_task(12, 6, seed=3)
NEEDLES = [DOCS[int(i)] for q in QUERIES for i in q.reference_ids]


def _persons(text):
    return evalset._persons([text])


def test_haystack_documents_and_needles():
    docs = list(haystack(60_000, NEEDLES, token_range=(50, 300), seed=1))
    assert docs == list(haystack(60_000, NEEDLES, token_range=(50, 300), seed=1))
    assert docs != list(haystack(60_000, NEEDLES, token_range=(50, 300), seed=2))
    real = [d for d in docs if d not in NEEDLES]
    ids = [d.id for d in docs]
    assert len(set(ids)) == len(ids)
    for n in NEEDLES:
        assert docs.count(n) == 1  # every needle once, its id and text kept
    assert sum(d in NEEDLES for d in docs) == len(NEEDLES)
    lengths = [len(TOK.encode(d.text)) for d in real]
    assert all(50 <= n <= 300 for n in lengths), (min(lengths), max(lengths))
    assert sum(lengths) >= 60_000 and sum(lengths) - lengths[-1] < 60_000
    first = 1 + max(int(n.id) for n in NEEDLES)  # real documents are numbered after the needles
    assert [int(d.id) for d in real] == list(range(first, first + len(real)))
    # needles sit among the real documents, not all at one end
    where = [ids.index(n.id) for n in NEEDLES]
    assert 0 < min(where) or max(where) < len(docs) - 1
    needle_people = set().union(*(_persons(n.text) for n in NEEDLES))
    assert needle_people  # the check below can see names
    assert not any(_persons(d.text) for d in real)


def test_synthetic_names_in_the_text_are_dropped():
    name = "Lena K. Sato"
    texts = lambda: [("word " * 40 + f"{name} ") * 3 + "plain " * 200]  # noqa: E731
    docs = list(haystack(500, token_range=(20, 40), texts=texts))
    assert docs and not any(name in d.text for d in docs)


def test_text_exhausted_is_recut_with_a_warning(caplog):
    texts = lambda: [" ".join(f"w{i}" for i in range(100))]  # noqa: E731  about 390 bytes
    with caplog.at_level(logging.WARNING, "msa_jax.data.haystack"):
        docs = list(haystack(1_000, token_range=(10, 30), texts=texts))
    assert sum(len(d.text.encode()) for d in docs) >= 1_000
    assert "ran out" in caplog.text
    with pytest.raises(ConfigError, match="no document of"):
        list(haystack(100, token_range=(10_000, 20_000), texts=texts))
    with pytest.raises(ConfigError, match="token_range"):
        list(haystack(100, token_range=(0, 5)))


def test_synthetic_haystack_names_only_the_given_persons():
    """The synthetic distractors: deterministic, at least the requested tokens, every needle once
    with its id, distinct ids, and no person outside `people` (the training split) named, so no
    distractor states a fact about an evaluation entity."""
    from msa_jax.data.haystack import synthetic_haystack
    from msa_jax.eval.evalset import build_eval_suite
    from msa_jax.training.tasks import EntitySplit

    suite = build_eval_suite(single_hop=4, two_hop=2)
    needles = list(suite.documents)
    train = EntitySplit().people("train")
    count = lambda s: len(TOK.encode(s))  # noqa: E731
    docs = list(synthetic_haystack(30_000, needles, people=train, seed=1, count_tokens=count,
                                   block=64))
    assert docs == list(synthetic_haystack(30_000, needles, people=train, seed=1,
                                           count_tokens=count, block=64))
    ids = [d.id for d in docs]
    assert len(set(ids)) == len(ids)
    for n in needles:
        assert docs.count(n) == 1
    distractors = [d for d in docs if d not in needles]
    assert sum(count(d.text) for d in distractors) >= 30_000
    named = set().union(*(_persons(d.text) for d in distractors))
    assert named and named <= set(train.tolist())
    held = set().union(*(_persons(d.text) for d in needles))
    assert held and not (held & named)
