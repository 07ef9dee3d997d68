"""Parameter creation: a plain pytree of arrays, optionally created already sharded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from msa_jax import sharding
from msa_jax.config import ModelConfig
from msa_jax.errors import ConfigError
from msa_jax.model.transformer import Transformer


def _zero_attend(index, proj):
    del index
    return jnp.zeros_like(proj.q), None


def _forward_and_head(module: Transformer, tokens, positions):
    h, _, _ = module(tokens, positions, _zero_attend)
    return module.logits(h)  # creates the untied LM head too


def _boxed_init(cfg: ModelConfig, rng: jax.Array):
    tokens = jnp.zeros((1, 1), jnp.int32)
    variables = Transformer(cfg).init(rng, tokens, tokens, method=_forward_and_head)
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


INIT_STD = 0.02  # projections and (by default) the token embedding


def _is_embedding(names) -> bool:
    return "embed_tokens" in names


def _host_value(path, leaf: jax.ShapeDtypeStruct, cfg: ModelConfig, rng: np.random.Generator,
                embedding_std: float):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-1] == "scale":  # RMSNorm weights
        return np.ones(leaf.shape, leaf.dtype)
    std = INIT_STD
    if any(n.startswith("router_") for n in names):
        std = cfg.msa.router_init_std
    elif _is_embedding(names):
        std = embedding_std
    return rng.normal(0.0, std, leaf.shape).astype(leaf.dtype)


def _rescale_embedding(params, embedding_std: float):
    """params with the token embedding (drawn ~ N(0, INIT_STD)) scaled to N(0, embedding_std)."""
    def scale(path, x):
        names = [getattr(k, "key", str(k)) for k in path]
        return x * (embedding_std / INIT_STD) if _is_embedding(names) else x
    return jax.tree_util.tree_map_with_path(scale, params)


def init_params(cfg: ModelConfig, seed: int = 0, mesh: Mesh | None = None, on_device: bool = False,
                embedding_std: float = INIT_STD):
    """Random parameters: projections and embeddings ~ N(0, 0.02) (router projections
    N(0, router_init_std); the token embedding N(0, embedding_std)), norms 1.

    embedding_std: a model trained from scratch with a router learns much faster with a large
    embedding (e.g. 1.0, untied from the LM head): with 0.02 the random attention and MLP
    outputs of the layers below a router layer swamp each token's identity in its input, and the
    routing loss sits on its plateau (docs/training.md).

    By default drawn with numpy on the host (no compilation: quick for tests and small models)
    and placed on device, sharded over `mesh` if given. `on_device=True` draws them with JAX
    inside a jit whose outputs are created already sharded (no host copy: for large models).
    """
    if not embedding_std > 0:
        raise ConfigError(f"embedding_std must be > 0, got {embedding_std}")
    shardings = param_shardings(cfg, mesh) if mesh is not None else None
    if on_device:
        init = lambda r: _rescale_embedding(nn.unbox(_boxed_init(cfg, r)),  # noqa: E731
                                            embedding_std)
        return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    host = jax.tree_util.tree_map_with_path(
        lambda p, x: _host_value(p, x, cfg, rng, embedding_std), abstract_params(cfg))
    if shardings is None:
        return jax.tree.map(jnp.asarray, host)
    return jax.tree.map(jax.device_put, host, shardings)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
