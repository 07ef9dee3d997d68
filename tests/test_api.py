"""The public API end to end on a tiny random MSA model with the byte tokenizer."""

import numpy as np
import pytest

import msa_jax
from tests.models import byte_model


@pytest.fixture(scope="module")
def model():
    return byte_model(router_layers=(2, 3), pooling_size=8, top_k_docs=2)


DOCS = {"sky": "The sky of Vega is red.", "sea": "The sea of Vega is green.",
        "sun": "The sun of Tau is blue.", "moon": "The moon of Tau is grey."}


def test_encode_and_ask(model):
    bank = model.encode_memory(DOCS, progress=False)
    assert bank.num_docs == 4 and bank.doc_texts[0] == DOCS["sky"]
    wrapped = model.tokenizer.decode(bank.doc_tokens[0])
    assert wrapped == "<|im_start|>[sky]. The sky of Vega is red.[sky]<|im_end|>"
    one = model.ask("What colour is the sky of Vega?", bank, interleave=False, answer_tokens=4)
    assert isinstance(one.text, str)
    assert [c.layer for c in one.answer_routing] == [2, 3]
    for c in one.answer_routing:
        assert len(c.docs) == 2 and set(c.docs) <= set(DOCS)
        assert c.scores == sorted(c.scores, reverse=True)
    many = model.ask("What colour is the sky of Vega?", bank, max_rounds=2, max_new_tokens=4,
                     answer_tokens=4)
    assert 1 <= len(many.rounds) <= 2
    assert [c.layer for c in many.rounds[0].routing] == [2, 3]


def test_plain_lm_api_and_save_reload(model, tmp_path):
    ids = np.array([[5, 6, 7, 8]])
    logits = np.asarray(model(ids))
    assert logits.shape == (1, 4, model.cfg.vocab_size)
    text = model.generate("abc", max_new_tokens=3)
    assert isinstance(text, str)
    assert model.generate([5, 6, 7], max_new_tokens=3) == model.generate([[5, 6, 7]], 3)[0]
    path = model.save_pretrained(str(tmp_path / "ckpt"))
    again = msa_jax.from_pretrained(path)
    assert again.cfg.msa == model.cfg.msa
    # bit-equal: the same jitted forward on the same float32 weights (save/load moves data only)
    np.testing.assert_array_equal(np.asarray(again(ids)), logits)
    assert again.tokenizer.encode("abc") == model.tokenizer.encode("abc")


def test_errors_name_the_problem(model):
    bank = model.encode_memory(DOCS, progress=False)
    with pytest.raises(ValueError, match="question is empty"):
        model.ask("  ", bank)
    no_tok = msa_jax.MSAModel(model.cfg, model.params)
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tok.encode_memory(["text"], progress=False)
    plain = msa_jax.MSAModel.random(msa_jax.preset("tiny"), 0)
    with pytest.raises(msa_jax.BankError, match="no MSA config"):
        plain.encode_memory([[5, 6, 7]], progress=False)
