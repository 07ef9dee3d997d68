"""Sampling and the compiled decode loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference import generate as gen
from msa_jax.inference.sampling import Sampling, next_token, top_p_filter
from tests.tolerances import F32_REASSOC


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.5, 0.05, 0.3, 0.15], [0.25, 0.25, 0.25, 0.25]], np.float32))
    for p, want in ((0.5, [[1, 0, 0, 0]]), (0.79, [[1, 0, 1, 0]]), (0.81, [[1, 0, 1, 1]]),
                    (1.0, [[1, 1, 1, 1]])):
        kept = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits[:1]), p)))
        np.testing.assert_array_equal(kept, np.asarray(want, bool), err_msg=f"top_p={p}")


def test_sampling_follows_the_distribution_and_greedy_is_argmax():
    logits = jnp.log(jnp.asarray([[0.6, 0.3, 0.1]] * 4000, jnp.float32))
    toks = np.asarray(next_token(logits, jax.random.key(0), jnp.float32(1.0), jnp.float32(1.0)))
    freq = np.bincount(toks, minlength=3) / toks.size
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.03)
    nucleus = np.asarray(next_token(logits, jax.random.key(1), jnp.float32(1.0),
                                    jnp.float32(0.5)))
    assert set(nucleus.tolist()) == {0}
    greedy = np.asarray(next_token(logits[:2] + jnp.asarray([0, 5.0, 0]), jax.random.key(2),
                                   jnp.float32(0.0), jnp.float32(1.0)))
    assert greedy.tolist() == [1, 1]
    with pytest.raises(ValueError):
        Sampling(temperature=-1)
    with pytest.raises(ValueError):
        Sampling(top_p=0)


@pytest.fixture(scope="module")
def model():
    return msa_jax.MSAModel.random(msa_jax.preset("tiny", vocab_size=64), 0)


def test_decode_step_compiles_once_per_bucket(model):
    cfg, params = model.cfg, model.params
    gen.generate(cfg, params, [[5, 6, 7]], max_new_tokens=5, eos_ids=())
    loops, prefills = gen.decode_loop._cache_size(), gen.prefill._cache_size()
    for prompt, n in (([8, 9], 3), ([1] * 15, 7), ([2] * 9, 8)):  # same buckets (16, 8)
        gen.generate(cfg, params, [prompt], max_new_tokens=n, eos_ids=())
    assert gen.decode_loop._cache_size() == loops
    assert gen.prefill._cache_size() == prefills


def test_sampled_generation_is_seeded_and_stops_at_eos(model):
    cfg, params = model.cfg, model.params
    a = gen.generate(cfg, params, [[5, 6, 7]] * 2, 12, Sampling(1.0, 0.9, seed=3), eos_ids=())
    b = gen.generate(cfg, params, [[5, 6, 7]] * 2, 12, Sampling(1.0, 0.9, seed=3), eos_ids=())
    c = gen.generate(cfg, params, [[5, 6, 7]] * 2, 12, Sampling(1.0, 0.9, seed=4), eos_ids=())
    assert a == b and a != c
    greedy = gen.generate(cfg, params, [[5, 6, 7]], 12, eos_ids=())[0]
    stop = greedy[4]
    cut = gen.generate(cfg, params, [[5, 6, 7]], 12, eos_ids=(stop,))[0]
    assert cut == greedy[:greedy.index(stop) + 1]


def test_left_padded_batch_equals_single_prompts(model):
    cfg, params = model.cfg, model.params
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13]]
    batch = gen.generate(cfg, params, prompts, 6, eos_ids=())
    tol = F32_REASSOC  # the padded batch and the oracle are different computations
    for p, out in zip(prompts, batch):
        # oracle: one causal forward of this prompt alone followed by the batch's answer (teacher
        # forcing); each new token must be its greedy choice wherever the top-1 / top-2 margin
        # is wider than twice the float32 tolerance (else either token is right)
        logits = np.asarray(model(np.asarray([p + out])))[0, len(p) - 1:-1]  # [6, V]
        top2 = np.sort(logits, -1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] > 2 * (tol["atol"] + tol["rtol"] * np.abs(top2[:, 1]))
        assert decided.any()
        np.testing.assert_array_equal(np.asarray(out)[decided], logits.argmax(-1)[decided])


def test_bad_prompts(model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        gen.generate(model.cfg, model.params, [[1], []], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(model.cfg, model.params, [[1]], 0)
