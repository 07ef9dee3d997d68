"""Jitted generation: a prefill, then one compiled decode loop (lax.while_loop) for every token.

Shapes are bucketed (prompt length and number of new tokens round up to powers of two), so a new
prompt length or token budget recompiles only when it crosses a bucket.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernels_pallas.common import geometric_size, next_pow2
from msa_jax.config import ModelConfig
from msa_jax.inference.sampling import Sampling, next_token
from msa_jax.model.cache import KVCache, empty_cache, step_times
from msa_jax.model.decode import forward_step, logits_of

Array = jax.Array


def bucket(n: int, minimum: int = 16) -> int:
    """The padded size of a prompt length or token budget: the power of two >= max(n, minimum)."""
    return next_pow2(n, minimum)


def fine_bucket(n: int) -> int:
    """n rounded up to 1, 2, 4, 8, 9, 10, ..., 16, 18, 20, ..., 32, 36, 40, ...: powers of two up
    to 8, then eight sizes per octave (< 12.5% padding, the series of the bank's view; a new size,
    a recompile, only past that)."""
    n = max(int(n), 1)
    return bucket(n, 1) if n <= 8 else geometric_size(n, 1)


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int):
    """Prompts -> tokens, mask [B, length] int32, left padded."""
    if not prompts:
        raise ValueError("no prompts given")
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(p) > length:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than {length}")
        tokens[i, length - len(p):] = p
        mask[i, length - len(p):] = 1
    return tokens, mask


def prompt_positions(mask: np.ndarray, offset: int = 0) -> np.ndarray:
    """Positions of left-padded prompts: offset + i for the i-th real token; pads copy the first."""
    return (offset + np.maximum(np.cumsum(mask, axis=1) - 1, 0)).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def prefill(cfg: ModelConfig, params, cache: KVCache, tokens: Array, mask: Array,
            positions: Array):
    """Prompt [B, T] into the cache -> (next-token logits [B, V], cache, next positions [B])."""
    k_time, q_time = step_times(cache.index, mask)
    h, cache, _ = forward_step(cfg, params, cache, tokens, positions, k_time, q_time)
    return logits_of(cfg, params, h[:, -1:])[:, 0], cache, positions[:, -1] + 1


@functools.partial(jax.jit, static_argnames=("cfg", "budget"), donate_argnames=("cache",))
def decode_loop(cfg: ModelConfig, params, cache: KVCache, logits: Array, positions: Array,
                max_new: Array, temperature: Array, top_p: Array, rng: Array, eos_ids: Array,
                pad_id: Array, budget: int, table: Array | None = None):
    """Sample up to `max_new` (<= budget) tokens per row; stop a row at an EOS id.

    logits [B, V] are the next-token logits after the prompt; positions [B] the next positions.
    `table` [S, V] (msa_jax.inference.constrain), if given, allows only the tokens of its trie.
    Returns (tokens [B, budget] (pad after the end), lengths [B], cache).
    """
    b = logits.shape[0]
    ones = jnp.ones((b, 1), jnp.int32)

    def body(state):
        step, cache, logits, pos, rng, out, done, trie = state
        rng, sub = jax.random.split(rng)
        if table is not None:
            logits = jnp.where(table[trie] >= 0, logits, -jnp.inf)
        tok = next_token(logits, sub, temperature, top_p)  # [B]
        if table is not None:
            trie = table[trie, tok]  # [B] next trie states
        tok = jnp.where(done, pad_id, tok)
        out = out.at[:, step].set(tok)
        done = done | jnp.isin(tok, eos_ids)
        k_time, q_time = step_times(cache.index, ones)
        h, cache, _ = forward_step(cfg, params, cache, tok[:, None], pos[:, None], k_time, q_time)
        logits = logits_of(cfg, params, h)[:, 0]
        return step + 1, cache, logits, pos + 1, rng, out, done, trie

    def cond(state):
        step, done = state[0], state[6]
        return (step < max_new) & ~jnp.all(done)

    out = jnp.full((b, budget), pad_id, jnp.int32)
    done = jnp.zeros((b,), bool)
    trie = jnp.zeros((b,), jnp.int32)  # constrain.ROOT
    init = (jnp.zeros((), jnp.int32), cache, logits, positions, rng, out, done, trie)
    step, cache, _, _, _, out, _, _ = jax.lax.while_loop(cond, body, init)
    is_eos = jnp.isin(out, eos_ids)
    first_eos = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1) + 1, step)
    return out, jnp.minimum(first_eos, step), cache


def sample_tokens(cfg: ModelConfig, params, cache: KVCache, logits: Array, positions: Array,
                  max_new_tokens: int, sampling: Sampling, eos_ids: Sequence[int],
                  pad_id: int, budget: int | None = None,
                  table: np.ndarray | None = None) -> tuple[list[list[int]], KVCache]:
    """Run the decode loop from prefill outputs; returns the new tokens per row (EOS included).
    `budget` (static; default: max_new_tokens bucketed) sizes the compiled loop's buffers;
    `table` (constrain.next_state_table) restricts every row to the sequences of its trie."""
    if table is not None and table.shape[1] != logits.shape[-1]:
        raise ValueError(f"constraint table of {table.shape[1]} tokens for a vocabulary of "
                         f"{logits.shape[-1]}")
    budget = budget or bucket(max_new_tokens, 8)
    if budget < max_new_tokens:
        raise ValueError(f"budget {budget} < max_new_tokens {max_new_tokens}")
    if int(cache.index) + budget > cache.capacity:
        raise ValueError(f"KV cache of {cache.capacity} slots cannot hold {budget} more tokens "
                         f"after {int(cache.index)}")
    eos = jnp.asarray(list(eos_ids) or [-1], jnp.int32)
    out, lengths, cache = decode_loop(
        cfg, params, cache, logits, positions, jnp.int32(max_new_tokens),
        jnp.float32(sampling.temperature), jnp.float32(sampling.top_p),
        jax.random.key(sampling.seed), eos, jnp.int32(pad_id), budget=budget,
        table=None if table is None else jnp.asarray(table, jnp.int32))
    out, lengths = np.asarray(out), np.asarray(lengths)
    return [out[i, :lengths[i]].tolist() for i in range(out.shape[0])], cache


def generate(cfg: ModelConfig, params, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32,
             sampling: Sampling = Sampling(), eos_ids: Sequence[int] | None = None,
             pad_id: int | None = None) -> list[list[int]]:
    """Plain (memory-less) generation from token-id prompts; returns the new tokens per prompt."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos_ids = cfg.eos_ids if eos_ids is None else tuple(eos_ids)
    pad_id = (cfg.pad_token_id or 0) if pad_id is None else pad_id
    length = bucket(max(len(p) for p in prompts))
    tokens, mask = left_pad(prompts, length, pad_id)
    cache = empty_cache(cfg, len(prompts), length + bucket(max_new_tokens, 8))
    logits, cache, positions = prefill(cfg, params, cache, jnp.asarray(tokens), jnp.asarray(mask),
                                       jnp.asarray(prompt_positions(mask)))
    new, _ = sample_tokens(cfg, params, cache, logits, positions, max_new_tokens, sampling,
                           eos_ids, pad_id)
    return new
