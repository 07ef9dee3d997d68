"""Synthetic training tasks: per-step chain samples, hard negatives, the entity split."""

import hashlib
import re

import numpy as np
import pytest

from msa_jax.data import check_references, make_needle_task
from msa_jax.data.synthetic import person_index
from msa_jax.errors import ConfigError
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.training.samples import Sample, SampleError
from msa_jax.training.tasks import (EntitySplit, check_held_out, make_eval_set,
                                    make_retrieval_samples)

PERSON = re.compile(r"[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+")
KEY_TEXT = re.compile(r"The ([a-z ]+) of ([A-Z][a-z]+) ([A-Z])\. ([A-Z][a-z]+) is ")
TPL = PromptTemplate()


def _keys(text):
    """(adjective, noun | relation, first, initial, last) of every fact in `text`."""
    return [tuple(m.group(1).split()) + m.groups()[1:] for m in KEY_TEXT.finditer(text)]


def _people(texts):
    return {person_index(n) for t in texts for n in PERSON.findall(t)}


def test_needle_task_defaults_unchanged():
    """The new keyword arguments leave the default output as it was (sha256 taken on main
    before they existed)."""
    out = [make_needle_task(300, 60, seed=s, hops=h) for s in (0, 5) for h in (1, 2)]
    assert hashlib.sha256(repr(out).encode()).hexdigest() == (
        "9f09dcf737594bc7f8302c477812520cf14a13167f004a77c96eaf14ab0d3cb3")


def test_needle_task_people_restriction():
    allowed = np.arange(0, 21504, 7)
    docs, queries = make_needle_task(80, 20, seed=3, hops=2, people=allowed, hard_negatives=2)
    check_references(queries, docs)
    assert _people([d.text for d in docs] + [q.question for q in queries]) <= set(allowed.tolist())
    with pytest.raises(ConfigError, match="people must be"):
        make_needle_task(10, 2, people=[21504])


def test_hard_negatives_share_part_of_the_key():
    n, hops, k = 60, 2, 3
    docs, queries = make_needle_task(n, 10, seed=4, hops=hops, hard_negatives=k)
    assert [d.id for d in docs] == [str(i) for i in range(n + 10 * hops * k)]
    check_references(queries, docs)
    texts = {d.id: d.text for d in docs}
    all_keys = [key for t in texts.values() for key in _keys(t)]
    assert len(all_keys) == len(set(all_keys))  # every key (hard negatives included) stated once
    for q, query in enumerate(queries):
        for hop, needle_doc in enumerate(query.reference_ids):
            needle_keys = set(_keys(texts[needle_doc]))
            for j in range(k):
                (neg,) = _keys(texts[str(n + (q * hops + hop) * k + j)])
                # exactly one part differs: adjective, noun or relation, or one name part
                close = [key for key in needle_keys if len(key) == len(neg)
                         and sum(a != b for a, b in zip(key, neg)) == 1]
                assert close, (query, neg)


def test_two_hop_chain_is_one_sample_per_step():
    samples = make_retrieval_samples(6, hops=2, docs_per_sample=8, hard_negatives=1,
                                     with_answer=True, seed=2)
    assert len(samples) == 6 * 3
    for q in range(6):
        step0, step1, answer = samples[3 * q: 3 * q + 3]
        assert [s.id for s in (step0, step1, answer)] == [f"train-{q}.0", f"train-{q}.1",
                                                           f"train-{q}.answer"]
        (first,), (_, second) = step0.relevant_ids, step1.relevant_ids
        # step 2's routing labels: its document and the one injected before it (routed with
        # that document's text, it is no negative there); its target names the new one only
        assert step1.relevant_ids == (first, second)
        assert step0.documents == step1.documents == answer.documents
        assert len(step0.documents) == 8 and {first, second} <= set(step0.doc_ids)
        assert step0.history == () and step0.target == f"[{first}]" + TPL.round_end
        texts = {d.id: d.text for d in step0.documents}
        # step 2 routes with the injected original text of document 1
        assert step1.history == ((f"[{first}]" + TPL.round_end,
                                  f"[{first}]. {texts[first]}\n" + TPL.round_end),)
        assert step1.target == f"[{second}]" + TPL.round_end
        assert answer.relevant_ids == (first, second) and answer.target == TPL.end_of_retrieve
        assert answer.answer in texts[second] and len(answer.history) == 2


def test_single_hop_samples_hold_hard_negatives_and_are_deterministic():
    a = make_retrieval_samples(5, docs_per_sample=6, hard_negatives=2, seed=7)
    assert a == make_retrieval_samples(5, docs_per_sample=6, hard_negatives=2, seed=7)
    assert a != make_retrieval_samples(5, docs_per_sample=6, hard_negatives=2, seed=8)
    corpus = 5 + 6
    for q, s in enumerate(a):
        negatives = {str(corpus + q * 2 + j) for j in range(2)}
        assert negatives <= set(s.doc_ids) and len(s.documents) == 6
    with pytest.raises(ConfigError, match="cannot hold a chain"):
        make_retrieval_samples(2, docs_per_sample=2, hard_negatives=2)


def test_one_fact_per_document_leaves_one_value_in_an_answer_steps_text():
    """facts_per_doc=(1, 1) (the easy answer-step curriculum): every document states one fact,
    so the injected text of a two-hop answer step holds the answer as its only value word;
    the default (2, 5) gives several facts per document."""
    from msa_jax.data.synthetic import VALUES

    easy = make_retrieval_samples(6, hops=2, docs_per_sample=4, with_answer=True,
                                  facts_per_doc=(1, 1))
    for s in easy:
        assert all(len(_keys(d.text)) == 1 for d in s.documents), s.id
    answers = [s for s in easy if s.answer is not None]
    assert len(answers) == 6
    for s in answers:
        injected = " ".join(text for _, text in s.history)
        assert [w for w in re.findall(r"\w+", injected) if w in VALUES] == [s.answer]
    default = make_retrieval_samples(6, hops=2, docs_per_sample=4, with_answer=True)
    assert max(len(_keys(d.text)) for s in default for d in s.documents) > 1


def test_answer_steps_without_routing_labels():
    """answer_routing=False: the answer steps keep their text and target but have no relevant
    ids, so their packed doc_labels hold no routing positive (the routing loss and recall skip
    a sample without one) and nothing to read; the retrieval steps are unchanged."""
    from msa_jax.data import ByteTokenizer
    from msa_jax.training.packing import pack_batch, tokenize_sample

    kw = dict(hops=2, docs_per_sample=4, with_answer=True, seed=3)
    on, off = make_retrieval_samples(4, **kw), make_retrieval_samples(4, **kw,
                                                                      answer_routing=False)
    assert len(on) == len(off) == 4 * 3
    for a, b in zip(on, off):
        if a.answer is None:
            assert a == b
        else:
            assert a.relevant_ids and b.relevant_ids == ()
            assert (b.question, b.target, b.answer, b.history) == (a.question, a.target,
                                                                     a.answer, a.history)
    tok = ByteTokenizer()
    steps = [s for s in off if s.answer is not None][:1] + [off[0]]
    batch = pack_batch([tokenize_sample(s, tok) for s in steps], tok.encode("<h>"), 7, 0, 2048,
                       4)
    assert not batch["doc_labels"][0].any() and batch["doc_labels"][1].any()


def test_held_out_entities_never_in_training():
    split = EntitySplit(eval_fraction=0.2, seed=5)
    held = set(split.people("eval").tolist())
    assert held.isdisjoint(split.people("train").tolist())
    assert len(held) + len(split.people("train")) == 21504
    train = make_retrieval_samples(40, hops=2, docs_per_sample=6, hard_negatives=1,
                                   entities=split, with_answer=True)
    train_people = _people(t for s in train for t in
                           [s.question, *(d.text for d in s.documents), *sum(s.history, ())])
    assert train_people and train_people.isdisjoint(held)
    evals = make_eval_set(10, 300, hops=2, hard_negatives=1, entities=split)
    assert _people([d.text for d in evals.documents]) <= held
    assert _people([s.question for s in evals.samples]) <= held


def test_generator_checks_the_split():
    class Leaky(EntitySplit):  # a broken split whose training persons include held-out ones
        def people(self, split):
            return np.arange(21504) if split == "train" else super().people(split)

    with pytest.raises(SampleError, match=r"sample 'train-\d+\.0' names the held-out entity"):
        make_retrieval_samples(30, docs_per_sample=4, entities=Leaky(eval_fraction=0.5))
    docs = make_retrieval_samples(1, docs_per_sample=2)[0].documents
    bad = Sample("s9", docs, "Who is Alice B. Costa?", (docs[0].id,))
    with pytest.raises(SampleError, match="sample 's9' names the held-out entity 'Alice B. Costa'"):
        check_held_out([bad], [person_index("Alice B. Costa")])


def test_eval_set_large_memory():
    evals = make_eval_set(20, 2000, docs_per_sample=8, hard_negatives=1)
    assert len(evals.documents) == 2000 + 20 and len(evals.samples) == 20
    memory = {d.id: d for d in evals.documents}
    for s in evals.samples:
        assert s.id.startswith("eval-") and len(s.documents) == 8
        assert all(memory[d.id] == d for d in s.documents)  # its documents are memory documents
        adj_noun_person = re.fullmatch(r"What is the (.+)\?", s.question).group(1)
        assert f"The {adj_noun_person} is " in memory[s.relevant_ids[0]].text
