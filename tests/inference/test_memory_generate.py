"""Generation from memory: the padded injected block equals feeding the exact block."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference.memory_generate import (CONTEXT, ROUTING, QueryRow, append_block,
                                               prefill_rows)
from msa_jax.model.cache import step_times
from msa_jax.model.decode import forward_step, logits_of
from tests.tolerances import F32_REASSOC


@pytest.fixture(scope="module")
def setup():
    model = msa_jax.MSAModel.random(msa_jax.preset("tiny-msa", vocab_size=64), 0)
    rs = np.random.RandomState(0)
    bank = model.encode_memory([rs.randint(5, 64, n).tolist() for n in (9, 20, 13, 5, 30)],
                               progress=False)
    rows = [QueryRow.build(([7, 8, 9], ROUTING), ([4, 3, 1], CONTEXT)),
            QueryRow.build(([10, 11, 12, 13, 14], ROUTING), ([4, 3, 1], CONTEXT))]
    return model, bank, rows


@pytest.mark.parametrize("bidirectional", [False, True])
def test_append_block_equals_exact_block(setup, bidirectional):
    model, bank, rows = setup
    cfg = model.cfg.replace(msa=dataclasses.replace(model.cfg.msa,
                                                    bidirectional_injected_blocks=bidirectional))
    blocks = [[20, 21, 22], [23, 24, 25]]

    def prefill():
        return prefill_rows(cfg, model.params, bank.view(), jnp.asarray(bank.prefix_k),
                            jnp.asarray(bank.prefix_v), rows, 16)

    pre = prefill()
    logits, _, nxt = append_block(cfg, model.params, pre.cache, pre.positions, blocks)
    pre = prefill()
    mask = jnp.ones((2, 3), jnp.int32)
    pos = pre.positions[:, None] + jnp.arange(3)
    k_time, q_time = step_times(pre.cache.index, mask, bidirectional)
    h, _, _ = forward_step(cfg, model.params, pre.cache, jnp.asarray(blocks), pos, k_time,
                           q_time)
    want = np.asarray(logits_of(cfg, model.params, h))[:, -1]
    np.testing.assert_allclose(np.asarray(logits), want, **F32_REASSOC)  # padded vs exact block
    np.testing.assert_array_equal(np.asarray(nxt), np.asarray(pos[:, -1] + 1))
