"""The model's logical activation constraints bind to a mesh when one is set, by the one table
(msa_jax/sharding.py RULES), and change nothing without one.

A 4-device CPU mesh (data=2, memory=1, model=2) out of the 8 fake devices of tests/conftest.py.
Inputs are unsharded, so any sharding of the result can only come from the constraints.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import msa_jax
from msa_jax import api, sharding

B, T = 4, 8
# Float32: splitting heads over `model` splits o_proj's contraction (partial sums + all-reduce),
# so the results may differ from one device by float32 reassociation, hence a tolerance.
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return msa_jax.MSAModel.random(msa_jax.preset("tiny-msa"), 0)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(data=2, memory=1, model=2, devices=jax.devices()[:4])


def _ids(batch=B):
    return np.arange(batch * T).reshape(batch, T) % 500


def _args(model, batch=B):
    ids = jnp.asarray(_ids(batch), jnp.int32)
    return model.cfg, model.params, ids, jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), ids.shape)


def _specs(model, batch=B) -> set[str]:
    """The sharding specs of every sharding_constraint in the traced forward."""
    jaxpr = str(jax.make_jaxpr(api._logits, static_argnums=0)(*_args(model, batch)))
    return set(re.findall(r"sharding_constraint\[.*?spec=(P\([^)]*\))", jaxpr, re.S))


def test_constraints_bind_under_jax_set_mesh(model, mesh):
    ref = np.asarray(model(_ids()))
    with jax.set_mesh(mesh):
        out = model(_ids())
        specs = _specs(model)
        hlo = api._logits.lower(*_args(model)).compile().as_text()
    # q [B, T, N, H] -> batch over data, heads over model; the residual stream batch over data
    assert specs == {"P('data', None, 'model', None)", "P('data', None, None)"}, specs
    assert "num_partitions=4" in hlo
    cfg = model.cfg
    q_shard = f"f32[{B // 2},{T},{cfg.num_heads // 2},{cfg.head_dim}]"  # one device's q
    assert q_shard in hlo, "the compiled forward holds no per-device [B/2, T, N/2, H] block"
    assert out.sharding.spec[0] == "data" and len(out.sharding.device_set) == 4
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=ATOL)


def test_use_mesh_binds_and_no_mesh_changes_nothing(model, mesh):
    assert _specs(model) == set()  # no mesh: no constraint in the trace
    before = model(_ids())
    with sharding.use_mesh(mesh):
        assert _specs(model)
        assert model(_ids()).sharding.spec[0] == "data"
    after = model(_ids())  # the jit cache is keyed by the mesh: no stale sharded trace
    assert isinstance(after.sharding, jax.sharding.SingleDeviceSharding)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))  # same computation
    with sharding.use_mesh(None):
        assert _specs(model) == set()


def test_odd_batch_is_replicated_not_refused(model, mesh):
    """3 rows do not split over data=2: that dimension is replicated, heads still split."""
    ref = np.asarray(model(_ids(3)))
    with sharding.use_mesh(mesh):
        assert "P(None, None, 'model', None)" in _specs(model, 3)
        out = model(_ids(3))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=ATOL)


def test_one_table():
    assert sharding.mesh_axis("docs") == sharding.mesh_axis("chunks") == "memory"
    assert sharding.mesh_axis("batch") == "data" and sharding.mesh_axis("embed") is None
    m = sharding.make_mesh(data=2, memory=2, model=1, devices=jax.devices()[:4])
    assert sharding.fitted_spec(m, (4, 3), ("batch", "length")) == PartitionSpec("data", None)
    assert sharding.fitted_spec(m, (3, 6), ("batch", "docs")) == PartitionSpec(None, "memory")
    assert sharding.batch_axis(m, 5) is None
    with pytest.raises(KeyError, match="'nope' has no rule"):
        sharding.logical_to_spec(("nope",))
    with jax.set_mesh(m), pytest.raises(ValueError, match="do not name the 2 dimensions"):
        sharding.constrain(jnp.zeros((2, 2)), ("batch",))
