"""Generation from memory: a stage-2 prefill (routing per router layer), then the decode loop.

A query row is token ids with roles (docs/msa.md §4): ROUTING tokens (the question, and in later
Memory Interleave rounds the newly injected text) score the memory; CONTEXT tokens (templates,
earlier generations) do not. Query positions start at `query_offset` (prefix length + top-k), so the
retrieved memory reads as if it came just before the query.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.config import ModelConfig
from msa_jax.inference.generate import (bucket, fine_bucket, left_pad, prompt_positions,
                                        sample_tokens)
from msa_jax.inference.sampling import Sampling
from msa_jax.model.cache import KVCache, step_times
from msa_jax.model.decode import forward_step, logits_of
from msa_jax.model.query import (FetchFn, MemoryView, SelectFn, prefill_with_memory,
                                 prefix_cache)

Array = jax.Array
ROUTING, CONTEXT = 0, -1  # token roles (the reference's doc_id convention for query rows)


@dataclasses.dataclass(frozen=True)
class QueryRow:
    tokens: tuple[int, ...]
    roles: tuple[int, ...]  # ROUTING or CONTEXT per token

    def __post_init__(self):
        if len(self.tokens) != len(self.roles):
            raise ValueError(f"query row has {len(self.tokens)} tokens but {len(self.roles)} roles")
        if not self.tokens:
            raise ValueError("query row is empty")

    @staticmethod
    def build(*parts: tuple[Sequence[int], int]) -> "QueryRow":
        """QueryRow.build((question_ids, ROUTING), (tail_ids, CONTEXT), ...)."""
        tokens, roles = [], []
        for ids, role in parts:
            tokens += list(ids)
            roles += [role] * len(ids)
        return QueryRow(tuple(tokens), tuple(roles))


@dataclasses.dataclass
class LayerChoice:
    """The documents one router layer selected for one row, in descending score: bank slots
    here, document ids in the answers of msa_jax.api."""

    layer: int
    docs: list
    scores: list[float]


@dataclasses.dataclass
class PrefillResult:
    logits: Array  # [B, V] next-token logits
    cache: KVCache
    positions: Array  # [B] next positions
    choices: list[list[LayerChoice]]  # [row][router layer]


@functools.partial(jax.jit, static_argnames=("cfg", "select", "fetch", "routing_rows"),
                   donate_argnames=("cache",))
def _prefill(cfg: ModelConfig, params, memory: MemoryView, cache: KVCache, tokens, mask,
             positions, routing_mask, select: SelectFn | None = None, fetch: FetchFn | None = None,
             routing_rows: int | None = None):
    k_time, q_time = step_times(cache.index, mask)
    h, cache, (infos, _) = prefill_with_memory(cfg, params, memory, cache, tokens, positions,
                                               k_time, q_time, routing_mask, select=select,
                                               fetch=fetch, routing_rows=routing_rows)
    routed = [(info.doc_ids, info.scores, info.valid) for info in infos if info is not None]
    return logits_of(cfg, params, h[:, -1:])[:, 0], cache, positions[:, -1] + 1, routed


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Query rows as prefill arrays: tokens, mask, positions, routing [B, T] (left padded to a
    bucketed T), and routing_rows, the bucketed number of query rows the routing scan scores."""

    tokens: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    routing: np.ndarray
    routing_rows: int


def pack_rows(cfg: ModelConfig, rows: Sequence[QueryRow]) -> PackedRows:
    """Left-pad the rows to a power-of-two length; count their routing tokens (one token for
    query_reduce "last") and bucket that count (fine_bucket) for the routing scan."""
    if not any(r == ROUTING for row in rows for r in row.roles):
        raise ValueError("no routing tokens: a query needs question tokens to score the memory")
    for i, row in enumerate(rows):
        if ROUTING not in row.roles:
            raise ValueError(f"query row {i} has no routing (question) tokens")
    length = bucket(max(len(r.tokens) for r in rows))
    tokens, mask = left_pad([r.tokens for r in rows], length, cfg.pad_token_id or 0)
    roles, _ = left_pad([[r + 2 for r in row.roles] for row in rows], length, 0)
    routing = (roles == ROUTING + 2) & (mask > 0)
    most = 1 if cfg.msa.query_reduce == "last" else int(routing.sum(axis=1).max())
    return PackedRows(tokens, mask, prompt_positions(mask, cfg.msa.query_offset), routing,
                      min(fine_bucket(most), length))


def prefill_rows(cfg: ModelConfig, params, memory: MemoryView, prefix_k: Array, prefix_v: Array,
                 rows: Sequence[QueryRow], extra_capacity: int, select: SelectFn | None = None,
                 fetch: FetchFn | None = None) -> PrefillResult:
    """Left-pad the rows, prefill them against the memory; leave `extra_capacity` cache slots.
    The routing scan scores only the routing tokens (pack_rows' routing_rows query rows)."""
    packed = pack_rows(cfg, rows)
    length = packed.tokens.shape[1]
    pf = prefix_k.shape[1]
    capacity = bucket(pf + length + extra_capacity)  # few distinct shapes: few compilations
    cache = prefix_cache(cfg, prefix_k, prefix_v, len(rows), capacity)
    logits, cache, nxt, routed = _prefill(
        cfg, params, memory, cache, jnp.asarray(packed.tokens), jnp.asarray(packed.mask),
        jnp.asarray(packed.positions), jnp.asarray(packed.routing), select=select, fetch=fetch,
        routing_rows=packed.routing_rows)
    choices = [[] for _ in rows]
    for layer, (ids, scores, valid) in zip(cfg.msa.router_layers, routed):
        ids, scores, valid = np.asarray(ids), np.asarray(scores), np.asarray(valid)
        for b in range(len(rows)):
            keep = valid[b]
            choices[b].append(LayerChoice(layer, ids[b][keep].tolist(),
                                          scores[b][keep].astype(float).tolist()))
    return PrefillResult(logits, cache, nxt, choices)


@functools.partial(jax.jit, static_argnames=("cfg", "bidirectional"), donate_argnames=("cache",))
def _append(cfg: ModelConfig, params, cache: KVCache, tokens, mask, positions, last,
            bidirectional):
    k_time, q_time = step_times(cache.index, mask, bidirectional)
    h, cache, _ = forward_step(cfg, params, cache, tokens, positions, k_time, q_time)
    h_last = jax.lax.dynamic_slice_in_dim(h, last, 1, axis=1)  # [B, 1, D]
    return logits_of(cfg, params, h_last)[:, 0], cache


def append_block(cfg: ModelConfig, params, cache: KVCache, positions: Array,
                 blocks: Sequence[Sequence[int]]) -> tuple[Array, KVCache, Array]:
    """Feed a multi-token block per row into the cache without re-routing (the reference's
    stage-3 injection); every row's block has the same length. The block is causal unless
    `msa.bidirectional_injected_blocks` (the reference's quirk). The block is padded to a
    bucketed width with masked tokens (one compilation per bucket).
    Returns (next-token logits [B, V], cache, next positions [B])."""
    width = max(len(b) for b in blocks)
    if any(len(b) != width for b in blocks) or width == 0:
        raise ValueError(f"append_block needs non-empty blocks of one length, got "
                         f"{[len(b) for b in blocks]}")
    padded = bucket(width, 8)
    tokens = np.zeros((len(blocks), padded), np.int32)
    mask = np.zeros((len(blocks), padded), np.int32)
    for i, blk in enumerate(blocks):
        tokens[i, :width] = blk
        mask[i, :width] = 1
    if int(cache.index) + padded > cache.capacity:
        raise ValueError(f"cache of {cache.capacity} slots cannot take a block of {padded}")
    pos = np.asarray(positions)[:, None] + np.minimum(np.arange(padded), width - 1)[None, :]
    logits, cache = _append(cfg, params, cache, jnp.asarray(tokens), jnp.asarray(mask),
                            jnp.asarray(pos, jnp.int32), jnp.int32(width - 1),
                            bidirectional=cfg.msa.bidirectional_injected_blocks)
    return logits, cache, jnp.asarray(pos[:, width - 1] + 1, jnp.int32)


def generate_from_memory(cfg: ModelConfig, params, memory: MemoryView, prefix_k, prefix_v,
                         rows: Sequence[QueryRow], max_new_tokens: int,
                         sampling: Sampling = Sampling(), stop_ids: Sequence[int] = (),
                         select: SelectFn | None = None, fetch: FetchFn | None = None,
                         budget: int | None = None, reserve: int = 0,
                         constraint: Callable[[PrefillResult], np.ndarray | None] | None = None):
    """Prefill `rows` against the memory and decode. Returns (new tokens per row, PrefillResult
    whose cache holds the decoded tokens too). `budget` sizes the decode loop (default: the
    bucketed max_new_tokens); `reserve` leaves that many more cache slots (for later blocks);
    `constraint` maps the prefill (its routing choices) to a next-state table
    (msa_jax.inference.constrain) that restricts the decoded tokens, or None."""
    budget = budget or bucket(max_new_tokens, 8)
    pre = prefill_rows(cfg, params, memory, prefix_k, prefix_v, rows, budget + reserve, select,
                       fetch)
    table = constraint(pre) if constraint is not None else None
    new, cache = sample_tokens(cfg, params, pre.cache, pre.logits, pre.positions, max_new_tokens,
                               sampling, stop_ids, cfg.pad_token_id or 0, budget, table)
    pre.cache = cache
    return new, pre
