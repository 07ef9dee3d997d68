"""The optimiser: schedules against hand formulas, phases, parameter groups, accumulation,
bad configs named."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msa_jax.config import ConfigError
from msa_jax.training import optim
from msa_jax.training.optim import OptimConfig, Phase

PARAMS = {"layers_0": {"self_attn": {"router_q_proj": {"kernel": jnp.ones((3, 2))},
                                     "q_proj": {"kernel": jnp.ones((3, 2))}},
                       "input_layernorm": {"scale": jnp.ones((3,))}}}
GRADS = jax.tree.map(lambda x: jnp.full_like(x, 0.5), PARAMS)


def hand_lr(step, peak, warmup, total, end, decay):
    if step < warmup:
        return peak * step / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    if decay == "cosine":
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * t))
    return peak + (end - peak) * t


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_warmup_then_decay(decay):
    p = Phase(steps=20, lr=1e-3, warmup_steps=5, decay=decay, end_lr=1e-4)
    lr = optim.learning_rate(OptimConfig(phases=(p,)))
    for s in (0, 2, 5, 9, 14, 19, 20):
        np.testing.assert_allclose(float(lr(s)), hand_lr(s, 1e-3, 5, 20, 1e-4, decay),
                                   rtol=1e-5, err_msg=f"step {s}")


def test_two_phases_weights_and_schedules():
    """The paper's recipe: router warm-up 0.1 L_LM + L_aux, then L_LM + 0.1 L_aux."""
    cfg = OptimConfig(phases=(
        Phase(steps=10, lr=1e-4, lm_weight=0.1, aux_weight=1.0, decay="constant"),
        Phase(steps=30, lr=2e-4, lm_weight=1.0, aux_weight=0.1, warmup_steps=10,
              decay="linear", end_lr=6e-6)))
    lr = optim.learning_rate(cfg)
    assert float(lr(9)) == pytest.approx(1e-4)
    assert float(lr(15)) == pytest.approx(1e-4)  # half-way up phase 2's warm-up
    assert float(lr(40)) == pytest.approx(6e-6)
    for step, want in ((0, (0.1, 1.0)), (9, (0.1, 1.0)), (10, (1.0, 0.1)), (39, (1.0, 0.1))):
        got = optim.loss_weights(cfg, jnp.int32(step))
        assert (float(got[0]), float(got[1])) == pytest.approx(want), step
    assert cfg.total_steps == 40


def _moved(tx, steps=1):
    state = tx.init(PARAMS)
    params = PARAMS
    for _ in range(steps):
        upd, state = tx.update(GRADS, state, params)
        params = optax.apply_updates(params, upd)
    return jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, PARAMS)


def test_groups_partition_router_projections():
    labels = optim.param_groups(PARAMS)
    assert labels["layers_0"]["self_attn"]["router_q_proj"]["kernel"] == optim.ROUTER
    assert labels["layers_0"]["self_attn"]["q_proj"]["kernel"] == optim.BACKBONE


@pytest.mark.parametrize("how", ["freeze", "scale"])
def test_frozen_router_does_not_move(how):
    phase = Phase(steps=5, lr=1e-2, router_lr_scale=0.0 if how == "scale" else 1.0)
    cfg = OptimConfig(phases=(phase,), freeze="router" if how == "freeze" else "")
    moved = _moved(optim.make_optimizer(cfg), 2)
    attn = moved["layers_0"]["self_attn"]
    assert not attn["router_q_proj"]["kernel"] and attn["q_proj"]["kernel"]


def test_frozen_backbone_moves_only_the_router():
    cfg = OptimConfig(phases=(Phase(steps=5, lr=1e-2),), freeze="backbone")
    moved = _moved(optim.make_optimizer(cfg), 2)
    assert moved["layers_0"]["self_attn"]["router_q_proj"]["kernel"]
    assert not moved["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert not moved["layers_0"]["input_layernorm"]["scale"]


def test_accumulation_applies_the_mean_gradient_every_k():
    cfg = OptimConfig(phases=(Phase(steps=5, lr=1e-2),), accumulate_steps=2, clip_norm=0.0)
    tx, plain = optim.make_optimizer(cfg), optim.make_optimizer(
        OptimConfig(phases=cfg.phases, clip_norm=0.0))
    g1 = GRADS
    g2 = jax.tree.map(lambda x: -3.0 * x, GRADS)
    s = tx.init(PARAMS)
    u1, s = tx.update(g1, s, PARAMS)
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(u1))  # no update yet
    u2, s = tx.update(g2, s, PARAMS)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    want, _ = plain.update(mean, plain.init(PARAMS), PARAMS)
    for a, b in zip(jax.tree.leaves(u2), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize("kwargs,named", [
    (dict(phases=()), "optim.phases is empty"),
    (dict(phases=(Phase(steps=0, lr=1e-3),)), r"optim.phases\[0\].steps"),
    (dict(phases=(Phase(steps=5, lr=1e-3, warmup_steps=9),)), r"phases\[0\].warmup_steps"),
    (dict(phases=(Phase(steps=5, lr=1e-3, decay="exp"),)), r"phases\[0\].decay='exp'"),
    (dict(phases=(Phase(steps=5, lr=-1.0),)), r"phases\[0\].lr must be >= 0"),
    (dict(accumulate_steps=0), "optim.accumulate_steps"),
    (dict(freeze="everything"), "optim.freeze='everything'"),
])
def test_bad_configs_are_named(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        OptimConfig(**kwargs)
