"""Building blocks: RMSNorm, RoPE (document-wise positions are just positions), MLP, projections.

Parameters are declared with logical axis names (see msa_jax/sharding.py); `params` stay a plain
pytree of arrays: the boxes are stripped at init.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels_pallas.common import accum_dtype

Array = jax.Array


def _param(module: nn.Module, name: str, init, shape: Sequence[int], axes: Sequence[str],
           dtype) -> Array:
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


class RMSNorm(nn.Module):
    """y = weight * cast(x * rsqrt(mean(x^2) + eps)) with the statistics in accum_dtype(x.dtype)
    (float32, or float64 for float64 inputs)."""

    eps: float
    axis_name: str = "embed"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        weight = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,),
                        self.param_dtype)
        xf = x.astype(accum_dtype(x.dtype))
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return weight.astype(x.dtype) * y.astype(x.dtype)


class Einsum(nn.Module):
    """A bias-free projection `einsum(eqn, x, kernel)` with a logically named kernel."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    eqn: str
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = _param(self, "kernel", nn.initializers.normal(self.init_std), self.shape,
                        self.axes, self.param_dtype)
        return jnp.einsum(self.eqn, x.astype(self.dtype), kernel.astype(self.dtype))


class MLP(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    hidden_size: int
    intermediate_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, T, D]
        d, f = self.hidden_size, self.intermediate_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gate = Einsum((d, f), ("embed", "mlp"), "btd,df->btf", name="gate_proj", **kw)(x)
        up = Einsum((d, f), ("embed", "mlp"), "btd,df->btf", name="up_proj", **kw)(x)
        h = jax.nn.silu(gate) * up  # [B, T, F]
        return Einsum((f, d), ("mlp", "embed"), "btf,fd->btd", name="down_proj", **kw)(h)


class Embed(nn.Module):
    """Token embedding [V, D]; `attend` is the tied LM head."""

    vocab_size: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = _param(self, "embedding", nn.initializers.normal(0.02),
                                (self.vocab_size, self.hidden_size), ("vocab", "embed"),
                                self.param_dtype)

    def __call__(self, tokens: Array) -> Array:  # [B, T] -> [B, T, D]
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:  # [B, T, D] -> [B, T, V]
        return jnp.einsum("btd,vd->btv", x.astype(self.dtype), self.embedding.astype(self.dtype))


def rope_inv_freq(head_dim: int, theta: float, dtype=jnp.float32) -> Array:
    """theta^(-2i/H) for i < H/2 in `dtype` (float32: as transformers computes it)."""
    exponent = jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim
    return 1.0 / (theta ** exponent)


def apply_rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotate-half RoPE. x [B, T, heads, H]; positions [B, T] (document-wise or absolute). The
    angles are computed in accum_dtype(x.dtype) (float32, or float64 for float64 inputs)."""
    acc = accum_dtype(x.dtype)
    inv_freq = rope_inv_freq(x.shape[-1], theta, acc)  # [H/2]
    angles = positions.astype(acc)[..., None] * inv_freq  # [B, T, H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, H]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x * cos + rotated * sin
