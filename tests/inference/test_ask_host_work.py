"""Per-question host work is bounded by the documents a question injects: `ask` does not decode
(or even look at) every document of the bank."""

import msa_jax
from msa_jax import api
from msa_jax.data.corpus import Document
from tests.test_api import DOCS, model  # noqa: F401  (the fixture)


def _token_bank(model):  # noqa: F811
    """Documents given as token ids only: their text must be decoded when injected."""
    docs = [Document(k, tokens=tuple(model.tokenizer.encode(f"[{k}]. {v}")))
            for k, v in DOCS.items()]
    return model.encode_memory(docs, progress=False), docs


def test_ask_decodes_no_document_it_does_not_inject(model, monkeypatch):  # noqa: F811
    bank, docs = _token_bank(model)
    doc_tokens = {d.tokens for d in docs}
    decoded = []
    plain = msa_jax.MSAModel.decode

    def decode(self, ids, skip_special=True):
        if tuple(ids) in doc_tokens:
            decoded.append(tuple(ids))
        return plain(self, ids, skip_special)

    monkeypatch.setattr(msa_jax.MSAModel, "decode", decode)
    answer = model.ask("What colour is the sky of Vega?", bank, max_rounds=2, max_new_tokens=4,
                       answer_tokens=4)
    injected = {i for r in answer.rounds for i in r.injected_ids}
    assert len(decoded) == len(injected) < len(docs)


def test_bank_texts_reads_on_demand(model):  # noqa: F811
    bank, docs = _token_bank(model)
    texts = api._BankTexts(model, bank)
    assert texts["sea"] == model.decode(docs[1].tokens, False)
    assert "sky" in texts and "nope" not in texts and 3 not in texts
    bank.delete(["sun"])
    assert "sun" not in texts and sorted(texts) == sorted(set(DOCS) - {"sun"})
    assert len(texts) == 3
