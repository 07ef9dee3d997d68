"""One name per memory tier across the code (docs/architecture.md): the routing tier K̄r is
`routing_keys`, the content tier K̄, V̄ is `content_k`, `content_v`, wherever a tier is held
(stage-1 output, bank, saved bank, MemoryView, the chunks a router layer attends to)."""

import dataclasses

from msa_jax.memory import parallel, store
from msa_jax.model.cache import MemoryKV
from msa_jax.model.encode import PooledChunks
from msa_jax.model.query import MemoryView

TIERS = ("routing_keys", "content_k", "content_v")


def _fields(cls):
    return tuple(f.name for f in dataclasses.fields(cls))


def test_one_name_per_tier():
    assert _fields(PooledChunks) == TIERS  # stage 1
    assert _fields(MemoryView)[:3] == TIERS  # stage 2
    assert _fields(MemoryKV)[:2] == TIERS[1:]  # the selected content chunks
    assert store._ARRAYS == TIERS and parallel.TIERS == TIERS  # saved bank, sharded view
