"""Parameter creation: a plain pytree of arrays, optionally created already sharded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from msa_jax import sharding
from msa_jax.config import ModelConfig
from msa_jax.model.transformer import Transformer


def _zero_attend(index, proj):
    del index
    return jnp.zeros_like(proj.q), None


def _boxed_init(cfg: ModelConfig, rng: jax.Array):
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = Transformer(cfg).init(rng, tokens, tokens, _zero_attend)
    return variables["params"]


def logical_axes(cfg: ModelConfig):
    """Pytree (same structure as the params) of logical axis-name tuples."""
    boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0)))
    return jax.tree.map(lambda b: tuple(b.names), boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def abstract_params(cfg: ModelConfig):
    """ShapeDtypeStructs of the params (no memory allocated)."""
    return nn.unbox(jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0))))


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules=sharding.RULES):
    return jax.tree.map(lambda axes: sharding.logical_sharding(mesh, axes, rules=rules),
                        logical_axes(cfg), is_leaf=lambda x: isinstance(x, tuple))


def init_params(cfg: ModelConfig, rng: jax.Array | int = 0, mesh: Mesh | None = None):
    """Random parameters (normal, std 0.02; norms 1). With a mesh, created sharded in place."""
    if isinstance(rng, int):
        rng = jax.random.key(rng)
    init = lambda r: nn.unbox(_boxed_init(cfg, r))  # noqa: E731
    if mesh is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=param_shardings(cfg, mesh))(rng)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
