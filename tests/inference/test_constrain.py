"""Decoding constrained to allowed sequences (msa_jax/inference/constrain.py): the trie table,
the masked decode loop, and Memory Interleave rounds limited to the routed documents."""

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference import generate as gen
from msa_jax.inference.constrain import FREE, ROOT, follows, next_state_table
from msa_jax.inference.sampling import Sampling
from msa_jax.model.cache import empty_cache
from tests.models import byte_model

V = 64


def test_table_is_the_trie_of_the_sequences():
    seqs = [[5, 6, 9], [5, 7, 9], [8]]
    table = next_state_table(seqs, 16)
    assert table.shape == (8, 16) and table.dtype == np.int32
    assert set(np.flatnonzero(table[ROOT] >= 0)) == {5, 8}
    for seq in seqs:
        assert follows(table, seq) and follows(table, seq + [3, 1])  # free after a sequence
    assert not follows(table, [5, 8]) and not follows(table, [6])
    assert (table[FREE] == FREE).all()
    big = next_state_table([[i, i] for i in range(12)], 16)
    assert big.shape[0] == 16  # 1 root + 1 free + 12 inner nodes, rounded up to a power of two


@pytest.mark.parametrize("seqs, match", [
    ([], "no allowed sequences"), ([[1], []], "sequence 1 is empty"),
    ([[1, 2]], None), ([[1, 99]], "outside the vocabulary"),
    ([[1, 2], [1, 2, 3]], "extends another"), ([[1, 2, 3], [1, 2]], "prefix of another")])
def test_table_refuses_what_it_cannot_represent(seqs, match):
    if match is None:
        next_state_table(seqs, 16)
        return
    with pytest.raises(ValueError, match=match):
        next_state_table(seqs, 16)


@pytest.fixture(scope="module")
def model():
    return msa_jax.MSAModel.random(msa_jax.preset("tiny", vocab_size=V), 0)


def _decode(model, prompt, n, table=None, sampling=Sampling()):
    """New tokens after `prompt` and the first step's logits."""
    cfg, params = model.cfg, model.params
    length = gen.bucket(len(prompt))
    tokens, mask = gen.left_pad([prompt], length, 0)
    cache = empty_cache(cfg, 1, length + gen.bucket(n, 8))
    logits, cache, pos = gen.prefill(cfg, params, cache, jnp.asarray(tokens), jnp.asarray(mask),
                                     jnp.asarray(gen.prompt_positions(mask)))
    first = np.asarray(logits)[0]
    new, _ = gen.sample_tokens(cfg, params, cache, logits, pos, n, sampling, (), 0, table=table)
    return new[0], first


PROMPT = [5, 6, 7, 8, 9]


def test_greedy_is_the_argmax_among_the_allowed_tokens(model):
    free, first = _decode(model, PROMPT, 4)
    other = [free[0], (free[1] + 1) % V, free[2], free[3]]
    own, _ = _decode(model, PROMPT, 4, next_state_table([other, free], V))
    assert own == free  # the model's own greedy path is allowed: nothing changes
    forced, _ = _decode(model, PROMPT, 4, next_state_table([other], V))
    assert forced == other
    second, third = np.argsort(-first)[1:3].tolist()  # the best first token is not allowed
    pick, _ = _decode(model, PROMPT, 2, next_state_table([[third, 1], [second, 2]], V))
    assert pick == [second, 2]


def test_sampling_stays_inside_the_trie(model):
    seqs = [[3, 4, 5], [3, 9, 1], [7, 7, 7]]
    table = next_state_table(seqs, V)
    seen = set()
    for seed in range(6):
        out, _ = _decode(model, PROMPT, 3, table, Sampling(temperature=2.0, seed=seed))
        assert out in seqs
        seen.add(tuple(out))
    assert len(seen) >= 2  # it samples, not just the argmax
    with pytest.raises(ValueError, match="constraint table of 16 tokens"):
        _decode(model, PROMPT, 3, next_state_table(seqs, 16))


DOCS = {"sky": "The sky of Vega is red.", "sea": "The sea of Vega is green.",
        "sun": "The sun of Tau is blue.", "moon": "The moon of Tau is grey."}


@pytest.mark.single_leg  # an end-to-end ask; the masked decode loop above runs on both legs
def test_constrained_rounds_name_only_routed_documents():
    m = byte_model(router_layers=(2, 3), pooling_size=8, top_k_docs=1)
    bank = m.encode_memory(DOCS, progress=False)
    tpl = m.template
    free = m.ask("What colour is the sky of Vega?", bank, max_rounds=3, max_new_tokens=12,
                 answer_tokens=4)
    assert free.rounds[0].requested_ids == []  # a random model writes no id unconstrained
    ans = m.ask("What colour is the sky of Vega?", bank, max_rounds=3, max_new_tokens=12,
                answer_tokens=4, constrain_ids=True)
    injected = set()
    for r in ans.rounds:
        routed = {d for c in r.routing for d in c.docs} - injected
        allowed = {tpl.retrieval_response((d,)) for d in routed}
        allowed.add(tpl.retrieval_response((), last=True))
        assert r.generated in allowed, (r.generated, allowed)
        injected.update(r.injected_ids)
    assert ans.rounds[0].injected_ids  # it retrieved, then read what it named
