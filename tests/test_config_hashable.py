"""An MSAConfig built from a config.json whose msa_config holds lists and objects stays hashable
(a config is a static jit argument) and writes them back unchanged."""

import json

import jax
import jax.numpy as jnp

from msa_jax.config import MSAConfig, ModelConfig, preset

UPSTREAM = {
    "router_layer_idx": "2,3",
    "pooling_kernel_size": 8,
    "loss_layers": [1, 2, [3, 4]],  # not interpreted by the port: kept in `extra`
    "schedule": {"warmup": [10, 20], "name": "cosine"},
    "msa_jax": {"prefix_token_ids": [1, 2, 3]},
}


def test_msa_config_with_list_and_object_extras_is_hashable():
    msa = MSAConfig.from_hf(json.loads(json.dumps(UPSTREAM)), num_layers=4)
    hash(msa)
    cfg = preset("tiny-msa", msa=msa)
    hash(cfg)
    assert msa == MSAConfig.from_hf(json.loads(json.dumps(UPSTREAM)), num_layers=4)
    # a static jit argument: the trace sees the frozen value
    out = jax.jit(lambda c, x: x + c.msa.pooling_size, static_argnums=0)(cfg, jnp.zeros(()))
    assert float(out) == 8.0


def test_extras_round_trip_through_to_hf():
    d = MSAConfig.from_hf(UPSTREAM, num_layers=4).to_hf()
    assert d["loss_layers"] == UPSTREAM["loss_layers"]
    assert d["schedule"] == UPSTREAM["schedule"]
    again = ModelConfig.from_hf({**preset("tiny", num_layers=4).to_hf(), "msa_config": d})
    hash(again)
    assert again.msa == MSAConfig.from_hf(UPSTREAM, num_layers=4)


def test_extras_given_directly_are_frozen_too():
    hash(MSAConfig(extra=(("loss_layers", [1, 2]),)))
