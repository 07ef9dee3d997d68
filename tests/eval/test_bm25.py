"""BM25 retrieve-then-read: bm25s's ranking against a numpy oracle of the BM25 formula, and the
read prompt against the one Memory Interleave builds."""

import math
import re

import numpy as np
import pytest

pytest.importorskip("bm25s")

from msa_jax.errors import InputError  # noqa: E402
from msa_jax.eval.bm25 import BM25Index, answer_prompt, read, read_inputs  # noqa: E402
from msa_jax.data.corpus import Document  # noqa: E402
from msa_jax.inference.interleave import memory_interleave  # noqa: E402
from tests.inference.test_interleave import TOK, Scripted  # noqa: E402
from tests.models import byte_model  # noqa: E402

TEXTS = ["The red boat of the river.", "A red red car, and a car.", "Blue river and the blue boat",
         "Green lamp", "The old clock is red; the clock of Oslo."]
CORPUS = [Document(str(10 + i), text=t) for i, t in enumerate(TEXTS)]
# English stopwords of these texts and questions (bm25s drops them; the oracle by this list)
STOP = {"the", "of", "a", "and", "is", "what", "which"}
K1, B = 1.5, 0.75  # bm25s's defaults


def _words(text):
    return [w for w in re.findall(r"\w\w+", text.lower()) if w not in STOP]


def oracle_scores(question):
    """Lucene BM25: sum over query words of ln(1 + (N - df + .5) / (df + .5)) *
    tf / (tf + k1 (1 - b + b |d| / avgdl))."""
    docs = [_words(t) for t in TEXTS]
    n, avgdl = len(docs), np.mean([len(d) for d in docs])
    out = np.zeros(n)
    for w in _words(question):
        df = sum(w in d for d in docs)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(w)
            out[i] += idf * tf / (tf + K1 * (1 - B + B * len(d) / avgdl))
    return out


def oracle_ranking(question, k):
    s = oracle_scores(question)
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))  # ties: the earlier document
    return [CORPUS[i].id for i in order[:k]]


QUESTIONS = ["What is the red boat?", "Which river is blue?", "red clock clock", "Oslo zebra",
             "zebra"]


@pytest.mark.parametrize("chunk_docs", [2, 10])
def test_scores_and_ranking_match_the_bm25_formula(chunk_docs):
    index = BM25Index.build(CORPUS, chunk_docs=chunk_docs, show_progress=False)
    assert index.num_docs == 5 and index.nbytes > 0
    for q in QUESTIONS:
        # float32 scores of the library vs the float64 oracle
        np.testing.assert_allclose(index.scores(q), oracle_scores(q), rtol=1e-6, atol=1e-6)
        for k in (1, 3, 5):
            assert index.retrieve(q, k) == oracle_ranking(q, k), (q, k)
    # by hand (avgdl 3.6; idf red 0.539, boat 0.875): "10" 0.611 (red + boat), "12" 0.333 (boat),
    # "11" 0.297 (red twice in a longer document)
    assert index.retrieve("What is the red boat?", 3) == ["10", "12", "11"]


def test_bad_input_is_named():
    index = BM25Index.build(CORPUS, show_progress=False)
    with pytest.raises(InputError, match=r"k must be in \[1, 5\]"):
        index.retrieve("red", 6)
    with pytest.raises(InputError, match="document 't' .* no text"):
        BM25Index.build([Document("t", tokens=(1, 2))], show_progress=False)
    with pytest.raises(InputError, match="repeated document ids"):
        BM25Index.build([CORPUS[0], CORPUS[0]], show_progress=False)


def test_read_prompt_is_memory_interleaves_answer_step():
    question = "What is the red boat?"
    texts = {d.id: d.text for d in CORPUS}
    fake = Scripted(["[12][10]<|object_ref_end|>", "<End-of-Retrieve>"],
                    "The answer to the question is: amber<|im_end|>")
    answer = memory_interleave(fake, TOK, question, texts)
    assert answer.text == "amber" and [r.injected_ids for r in answer.rounds] == [["12", "10"], []]
    # what the answer was generated after: the last round's row, its generation, the intro
    expected = list(fake.rows[-1].tokens) + TOK.encode("<End-of-Retrieve>", True) + fake.blocks[-1]
    assert answer_prompt(TOK, question, ["12", "10"], texts) == expected


def test_read_runs_on_a_tiny_model():
    model = byte_model()
    texts = {d.id: d.text for d in CORPUS}
    prompt = answer_prompt(model.tokenizer, "What is the red boat?", ["10"], texts)
    tokens, mask, positions = read_inputs(model, prompt)
    head = len(model.cfg.msa.prefix_token_ids)
    real = positions[0][mask[0] > 0]
    assert tokens[0][mask[0] > 0].tolist() == list(model.cfg.msa.prefix_token_ids) + prompt
    assert real.tolist() == list(range(head)) + list(range(model.cfg.msa.query_offset,
                                                           model.cfg.msa.query_offset + len(prompt)))
    assert isinstance(read(model, "What is the red boat?", ["10"], texts, answer_tokens=4), str)
    with pytest.raises(InputError, match=r"documents \['99'\] have no text"):
        read(model, "What?", ["99"], texts)
