"""Logical axis names -> mesh axes, in one place; mesh construction.

Every parameter and activation dimension in the model carries a logical name (below). The mesh has
three axes: `data` (question batches), `memory` (documents of the memory bank: "memory parallel",
docs/msa.md §7) and `model` (tensor parallel; size 1 unless asked for). MSA replicates the model on
every device and shards the *memory*, so the default rules map only `batch` and the memory axes.
Changing the parallelism is a change of `RULES` (or of the rules passed to `logical_sharding`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "memory", "model")

# Logical axes used in the code:
#   batch     B   question batch            length  T/S  sequence / key slots
#   embed     D   model dim                 mlp     F    MLP hidden
#   q_heads   N   query heads               kv_heads K   KV heads
#   head_dim  H                             vocab   V
#   chunks    C   pooled chunks of memory   docs    M    documents of memory
#   router    R   router layers (the leading axis of the memory tiers)
RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("length", None),
    ("embed", None),
    ("mlp", "model"),
    ("q_heads", "model"),
    ("kv_heads", "model"),
    ("head_dim", None),
    ("vocab", "model"),
    ("chunks", "memory"),
    ("docs", "memory"),
    ("router", None),
)


def logical_to_spec(axes: Sequence[str | None], rules=RULES) -> PartitionSpec:
    """('batch', 'length', 'embed') -> PartitionSpec('data', None, None)."""
    table = dict(rules)
    out = []
    for name in axes:
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        out.append(None if name is None else table[name])
    return PartitionSpec(*out)


def make_mesh(data: int = 1, memory: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, memory, model) mesh; `memory=None` takes every device left over."""
    devices = list(devices if devices is not None else jax.devices())
    if memory is None:
        if len(devices) % (data * model):
            raise ValueError(f"{len(devices)} devices do not split into data={data} x model={model}")
        memory = len(devices) // (data * model)
    need = data * memory * model
    if need > len(devices):
        raise ValueError(f"mesh data={data} x memory={memory} x model={model} needs {need} devices, "
                         f"{len(devices)} available")
    grid = np.array(devices[:need], dtype=object).reshape(data, memory, model)
    return Mesh(grid, MESH_AXES)


def logical_sharding(mesh: Mesh, axes: Sequence[str | None], memory_kind: str | None = None,
                     rules=RULES) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry these logical names."""
    spec = logical_to_spec(axes, rules)
    if memory_kind is None:
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, spec, memory_kind=memory_kind)


def replicated(mesh: Mesh, memory_kind: str | None = None) -> NamedSharding:
    return logical_sharding(mesh, (), memory_kind)
