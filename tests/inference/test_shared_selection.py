"""msa.shared_selection at inference: every router layer reads the documents the first router
layer selects (tiny-msa: router layers 2 and 3, top-2 of 12 documents)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, prefill_rows
from msa_jax.model.query import local_select


def with_msa(cfg, **kw):
    return cfg.replace(msa=dataclasses.replace(cfg.msa, **kw))


@pytest.fixture(scope="module")
def setup():
    model = msa_jax.MSAModel.random(msa_jax.preset("tiny-msa", vocab_size=64), 0)
    rs = np.random.RandomState(1)
    bank = model.encode_memory([rs.randint(5, 64, n).tolist() for n in rs.randint(8, 40, 12)],
                               progress=False)
    rows = [QueryRow.build(([4], CONTEXT), (rs.randint(5, 64, 9).tolist(), ROUTING)),
            QueryRow.build((rs.randint(5, 64, 6).tolist(), ROUTING), ([4, 3], CONTEXT))]
    return model, bank, rows


def _prefill(cfg, model, bank, rows, select=None):
    cfg = with_msa(cfg, top_k_docs=2)
    return prefill_rows(cfg, model.params, bank.view(), jnp.asarray(bank.prefix_k),
                        jnp.asarray(bank.prefix_v), rows, 8, select=select)


def test_every_router_layer_reads_the_first_layers_selection(setup):
    model, bank, rows = setup
    own = _prefill(model.cfg, model, bank, rows)
    first = [c[0].docs for c in own.choices]  # [B] the first router layer's documents
    # the case the option is for: layer 3 on its own selects other documents than layer 2
    assert any(c[1].docs != c[0].docs for c in own.choices)

    shared = _prefill(with_msa(model.cfg, shared_selection=True), model, bank, rows)
    for c, want in zip(shared.choices, first):
        assert [x.docs for x in c] == [want, want]

    # the same logits as a prefill whose select hook gives every layer the first layer's choice
    calls = []

    def first_choice(cfg, memory, r, qr, mask):
        info = local_select(cfg, memory, r, qr, mask)
        calls.append(info)
        return calls[0]

    forced = _prefill(model.cfg, model, bank, rows, select=first_choice)
    assert len(calls) == 2
    np.testing.assert_allclose(np.asarray(shared.logits), np.asarray(forced.logits),
                               rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(shared.logits) - np.asarray(own.logits)).max() > 1e-4


def test_the_option_round_trips_through_config_json(setup):
    model, _, _ = setup
    cfg = with_msa(model.cfg, shared_selection=True)
    assert type(cfg).from_hf(cfg.to_hf()).msa.shared_selection is True
    assert type(cfg).from_hf(model.cfg.to_hf()).msa.shared_selection is False
