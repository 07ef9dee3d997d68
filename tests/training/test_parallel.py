"""Data parallel: one device versus 2- and 4-device meshes over the `data` axis (fake CPU
devices, tests/conftest.py) give the same losses, gradient norms and parameters after a few
steps. Not bit-exact: the global means reduce the per-device partial sums in another order."""

import jax
import numpy as np
import pytest

from msa_jax.errors import InputError
from msa_jax.model.params import init_params
from msa_jax.training import optim
from msa_jax.training import step as st
from tests.training.batches import keyed_batch
from tests.training.test_step import CFG, M

STEPS, BATCH = 3, 4
OCFG = optim.OptimConfig(phases=(optim.Phase(steps=STEPS, lr=3e-3, warmup_steps=1),))


def train(devices: int):
    mesh = st.data_mesh(devices)
    tx = optim.make_optimizer(OCFG)
    state = st.place_state(CFG, mesh, st.init_state(init_params(CFG, 3), tx))
    fn = st.jit_step(CFG, OCFG, tx, M, mesh, state)
    losses = []
    for i in range(STEPS):
        batch = st.shard_batch(mesh, keyed_batch(CFG, np.random.default_rng([5, i]), BATCH, M))
        assert batch.tokens.sharding.spec[0] == "data"
        state, metrics = fn(state, batch)
        losses.append([float(metrics[k]) for k in ("loss", "lm_loss", "aux_loss", "grad_norm")])
    return np.asarray(losses), jax.device_get(state.params)


@pytest.fixture(scope="module")
def one_device():
    return train(1)


@pytest.mark.parametrize("devices", [2, 4])
def test_data_parallel_matches_one_device(one_device, devices):
    if jax.device_count() < devices:
        pytest.skip(f"needs {devices} devices")
    losses, params = train(devices)
    want_losses, want_params = one_device
    # float32, reductions in another order over B*L terms: 1e-5 relative on losses and norms;
    # parameters after 3 Adam steps (updates ~ lr * sign-like): 1e-5 absolute
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_batch_that_does_not_split_is_named():
    mesh = st.data_mesh(4)
    with pytest.raises(InputError, match="'tokens': 3 global rows do not split over 4"):
        st.shard_batch(mesh, keyed_batch(CFG, np.random.default_rng(0), 3, M))
