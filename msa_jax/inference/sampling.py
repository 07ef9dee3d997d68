"""Next-token choice: greedy, temperature and top-p (nucleus) sampling.

Temperature and top-p are traced values, so changing them does not recompile; temperature 0 is
greedy.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from msa_jax.errors import InputError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.temperature < math.inf:  # also refuses NaN
            raise InputError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")


def top_p_filter(logits: Array, top_p: Array) -> Array:
    """Set logits outside the nucleus to -inf. logits [B, V] float32."""
    order = jnp.argsort(-logits, axis=-1)  # [B, V] descending
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
    keep_sorted = before < top_p  # the top token is always kept
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(
        keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def next_token(logits: Array, rng: Array, temperature: Array, top_p: Array) -> Array:
    """logits [B, V] -> token ids [B] int32 (greedy skips the sort and the draw)."""

    def sample(logits):
        scaled = logits / jnp.maximum(temperature, 1e-6)
        return jax.random.categorical(rng, top_p_filter(scaled, top_p), axis=-1).astype(jnp.int32)

    def greedy(logits):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, sample, greedy, logits)
