"""Packing samples into TrainBatch arrays: the reference's layout (golden fixture) and errors."""

import json
import os

import numpy as np
import pytest

from msa_jax.data import ByteTokenizer, Document
from msa_jax.errors import ConfigError
from msa_jax.inference.interleave import PromptTemplate, question_row
from msa_jax.training.losses import IGNORE
from msa_jax.training.packing import (Buckets, TokenizedSample, pack_batch, tokenize_sample)
from msa_jax.training.samples import Sample, SampleError
from tests.conftest import golden_dirs

TPL = PromptTemplate()
TOK = ByteTokenizer()
HEAD = tuple(TOK.encode(TPL.prefix, allow_special=True))


def _fixture_train():
    for d in golden_dirs():
        path = os.path.join(d, "inputs.json")
        if os.path.basename(d) == "upstream_msa_tiny" and os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    pytest.skip("golden fixture upstream_msa_tiny not found")


def _runs(ids, roles, mask):
    """The fixture row cut into its parts: documents by role, then the active tokens."""
    n = int(np.sum(mask))
    docs = {}
    for t, r in zip(ids[:n], roles[:n]):
        if r > 0:
            docs.setdefault(r, []).append(t)
    active = [(t, r) for t, r in zip(ids[:n], roles[:n]) if r <= 0][3:]  # after the head
    return [tuple(docs[k]) for k in sorted(docs)], active


def test_reproduces_the_reference_training_batch():
    """The fixture's train batch (built by the reference) from its parts: positions, roles,
    labels, padding and doc_labels all come from pack_batch."""
    inputs = _fixture_train()
    t, special = inputs["train"], inputs["special_tokens"]
    head = special["template_head"]
    samples = []
    for b in range(len(t["input_ids"])):
        docs, active = _runs(t["input_ids"][b], t["doc_ids"][b], t["attention_mask"][b])
        tail_end = 1 + max(i for i, (_, r) in enumerate(active) if r == -2)
        response_head = len(special["response_head"])
        labelled = [False] * (tail_end + response_head)
        labelled += [True] * (len(active) - len(labelled))
        relevant = tuple(j + 1 for j, x in enumerate(t["batch_aux_labels"][b]) if x)
        samples.append(TokenizedSample(f"s{b}", tuple(docs), tuple(a for a, _ in active),
                                       tuple(r for _, r in active), tuple(labelled), relevant))
    length, m = len(t["input_ids"][0]), max(map(len, t["batch_aux_labels"]))
    got = pack_batch(samples, head, len(head) + t["top_k_docs"], special["pad"], length, m)
    for ours, theirs in [("tokens", "input_ids"), ("mask", "attention_mask"),
                         ("roles", "doc_ids"), ("positions", "position_ids"),
                         ("labels", "labels")]:
        np.testing.assert_array_equal(got[ours], np.asarray(t[theirs]), err_msg=ours)
    want_labels = np.zeros((2, m), np.int32)
    for b, x in enumerate(t["batch_aux_labels"]):
        want_labels[b, :len(x)] = x
    np.testing.assert_array_equal(got["doc_labels"], want_labels)
    assert got["num_docs"] == m and got["tokens"].dtype == np.int32


def _layout(batch, row):
    mask = batch["mask"][row] > 0
    return {k: batch[k][row][mask] for k in ("tokens", "positions", "roles", "labels")}


def test_text_sample_layout_matches_inference_formats():
    docs = (Document("7", text="The red car of Alice B. Costa is amber."),
            Document("x", tokens=[300, 301, 302]), Document("9", text="Other fact."))
    history = (("[7]" + TPL.round_end, "[7]. The red car...\n" + TPL.round_end),)
    sample = Sample("s", docs, "What is it?", ("9",), history=history)
    ts = tokenize_sample(sample, TOK, TPL)
    offset = len(HEAD) + 4
    row = _layout(pack_batch([ts], HEAD, offset, TOK.pad_id, 256, 4), 0)
    roles, tokens, positions = row["roles"], row["tokens"], row["positions"]
    np.testing.assert_array_equal(tokens[:len(HEAD)], HEAD)
    assert (roles[:len(HEAD)] == -2).all()
    for d, doc in enumerate(docs, start=1):
        ids = tokens[roles == d]
        want = doc.tokens if doc.tokens else TOK.encode(TPL.format_document(doc.id, doc.text), True)
        np.testing.assert_array_equal(ids, want)  # wrapped as MSAModel.encode_memory does
        np.testing.assert_array_equal(positions[roles == d], np.arange(len(want)))
    first_active = len(HEAD) + sum(len(ts.documents[i]) for i in range(3))
    q = question_row(TOK, TPL, sample.question, history)  # what inference routes with
    n_q = len(q.tokens)
    np.testing.assert_array_equal(tokens[first_active:first_active + n_q], q.tokens)
    np.testing.assert_array_equal(roles[first_active:first_active + n_q], q.roles)
    rest = len(tokens) - first_active
    np.testing.assert_array_equal(positions[first_active:], np.arange(offset, offset + rest))
    labelled = row["labels"] != IGNORE
    assert TOK.decode(tokens[labelled]) == "[9]" + TPL.round_end
    assert labelled[:first_active + n_q].sum() == 0  # the loss is on the response only
    np.testing.assert_array_equal(row["labels"][labelled], tokens[labelled])


def test_answer_step_labels_target_and_answer():
    docs = (Document("1", text="The red car of Alice B. Costa is amber."),)
    sample = Sample("a", docs, "What is the red car of Alice B. Costa?", ("1",), answer="amber")
    row = _layout(pack_batch([tokenize_sample(sample, TOK)], HEAD, 7, 0, 512, 1), 0)
    labelled = row["labels"] != IGNORE
    text = TOK.decode(row["tokens"][np.argmax(labelled):])
    intro = TPL.answer_intro.format(question=sample.question)
    assert text == "[1]" + TPL.end_of_retrieve + intro + TPL.answer_prefix + " amber" + \
        TPL.answer_end
    assert TOK.decode(row["tokens"][labelled]) == "[1]" + TPL.end_of_retrieve + \
        TPL.answer_prefix + " amber" + TPL.answer_end


def test_buckets_and_errors_name_the_sample():
    b = Buckets((64, 128), (2, 4))
    assert b.pick(64, 1) == (64, 2) and b.pick(65, 3) == (128, 4)
    with pytest.raises(ConfigError, match="Buckets.lengths must be positive, ascending"):
        Buckets((128, 64), (2,))
    long = Sample("long-1", (Document("0", text="x" * 200),), "q?", ("0",))
    ts = tokenize_sample(long, TOK)
    with pytest.raises(SampleError, match=r"sample 'long-1': \d+ tokens .* do not fit the "
                                          "largest length bucket 128"):
        b.check(ts.id, ts.length(len(HEAD)), len(ts.documents))
    with pytest.raises(SampleError, match="sample 'long-1': .* length bucket 64"):
        pack_batch([ts], HEAD, 7, 0, 64, 2)
    many = Sample("many", tuple(Document(str(i), tokens=[9]) for i in range(3)), "q?", ("0",))
    with pytest.raises(SampleError, match="sample 'many': 3 documents exceed the largest "
                                          "document bucket 2"):
        pack_batch([tokenize_sample(many, TOK)], HEAD, 7, 0, 512, 2)
    big = Sample("vocab", (Document("0", tokens=[600]),), "q?", ("0",))
    with pytest.raises(SampleError, match="sample 'vocab': token id 600 is outside"):
        pack_batch([tokenize_sample(big, TOK)], HEAD, 7, 0, 512, 2, vocab_size=512)


def test_doc_labels_mark_the_documents_each_step_reads():
    """READ_LABEL (OptimConfig.read="target") marks the relevant documents a step's target
    names: a later hop reads its new document, not the one injected before it; the answer step
    (target <End-of-Retrieve>) reads every relevant document."""
    from msa_jax.model.train_forward import READ_LABEL
    from msa_jax.training.tasks import make_retrieval_samples
    chain = make_retrieval_samples(1, hops=2, docs_per_sample=4, hard_negatives=1,
                                   with_answer=True)
    assert [s.id.rsplit(".", 1)[1] for s in chain] == ["0", "1", "answer"]
    hops = [s.relevant_ids for s in chain]
    tokenized = [tokenize_sample(s, TOK) for s in chain]
    labels = pack_batch(tokenized, HEAD, 7, 0, 2048, 4)["doc_labels"]
    column = {d: i for i, d in enumerate(chain[0].doc_ids)}
    first, second = column[hops[2][0]], column[hops[2][1]]
    want = np.zeros((3, 4), np.int32)
    want[0, first] = READ_LABEL
    want[1, first], want[1, second] = 1, READ_LABEL
    want[2, [first, second]] = READ_LABEL
    np.testing.assert_array_equal(labels, want)
