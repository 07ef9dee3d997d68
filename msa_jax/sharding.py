"""Logical axis names -> mesh axes, in one place; mesh construction; activation constraints.

Every parameter and activation dimension in the model carries a logical name (below). The mesh has
three axes: `data` (question batches), `memory` (documents of the memory bank: "memory parallel",
docs/msa.md §7) and `model` (tensor parallel; size 1 unless asked for). MSA replicates the model on
every device and shards the *memory*. `RULES` is the one table from logical to mesh axes: the
parameter shardings, the model's activation constraints and the memory-parallel code
(msa_jax/memory/) all read it. Changing the parallelism is a change of `RULES`.

Activation constraints act only while a mesh is set:

    with sharding.use_mesh(mesh):       # jax.set_mesh: part of the jit cache key
        logits = jitted_forward(...)    # `constrain(x, ("batch", "length", "embed"))` now binds

Outside it `constrain` returns its input (no mesh, nothing changes). A mesh axis whose size does
not divide the dimension is dropped for that dimension (it is replicated there), so odd batch
sizes run unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from msa_jax.errors import ConfigError

DATA, MEMORY, MODEL = "data", "memory", "model"
MESH_AXES = (DATA, MEMORY, MODEL)

# Logical axes used in the code:
#   batch     B   question batch            length  T/S  sequence / key slots
#   embed     D   model dim                 mlp     F    MLP hidden
#   q_heads   N   query heads               kv_heads K   KV heads
#   head_dim  H                             vocab   V
#   chunks    C   pooled chunks of memory   docs    M    documents of memory
#   router    R   router layers (the leading axis of the memory tiers)
RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA),
    ("length", None),
    ("embed", None),
    ("mlp", MODEL),
    ("q_heads", MODEL),
    ("kv_heads", MODEL),
    ("head_dim", None),
    ("vocab", MODEL),
    ("chunks", MEMORY),
    ("docs", MEMORY),
    ("router", None),
)


def mesh_axis(name: str, rules=RULES) -> str | None:
    """The mesh axis a logical axis maps to ('docs' -> 'memory'); for collectives' axis names."""
    return logical_to_spec((name,), rules)[0]


def logical_to_spec(axes: Sequence[str | None], rules=RULES) -> PartitionSpec:
    """('batch', 'length', 'embed') -> PartitionSpec('data', None, None)."""
    table = dict(rules)
    out = []
    for name in axes:
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        out.append(None if name is None else table[name])
    return PartitionSpec(*out)


def fitted_spec(mesh, shape: Sequence[int], axes: Sequence[str | None],
                rules=RULES, mesh_axes: Sequence[str] | None = None) -> PartitionSpec:
    """logical_to_spec for an array of `shape` on `mesh`, keeping a mesh axis for a dimension
    only where the mesh has it (among `mesh_axes`, default all) and its size divides the
    dimension; elsewhere that dimension is replicated."""
    usable = set(mesh.axis_names if mesh_axes is None else mesh_axes)
    out = []
    for dim, axis in zip(shape, logical_to_spec(axes, rules)):
        ok = axis in usable and dim % mesh.shape[axis] == 0
        out.append(axis if ok else None)
    return PartitionSpec(*out)


def batch_axis(mesh, batch: int) -> str | None:
    """The mesh axis question rows are split over: the batch axis's, when it divides `batch`
    evenly, else None (replicated)."""
    return fitted_spec(mesh, (batch,), ("batch",))[0]


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[None]:
    """Bind the model's activation constraints to `mesh` (by RULES) within; None: no-op."""
    if mesh is None:
        yield
        return
    with jax.set_mesh(mesh):
        yield


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """x, whose dimensions carry the logical names `axes`, constrained to the mesh set by
    `use_mesh` (its automatic axes, by RULES); x itself when no mesh is set."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not mesh.auto_axes:
        return x
    if len(axes) != x.ndim:
        raise ValueError(f"logical axes {tuple(axes)} do not name the {x.ndim} dimensions of an "
                         f"array of shape {x.shape}")
    return lax.with_sharding_constraint(x, fitted_spec(mesh, x.shape, axes,
                                                       mesh_axes=mesh.auto_axes))


def make_mesh(data: int = 1, memory: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, memory, model) mesh; `memory=None` takes every device left over."""
    devices = list(devices if devices is not None else jax.devices())
    if memory is None:
        if len(devices) % (data * model):
            raise ConfigError(f"{len(devices)} devices do not split into data={data} x model={model}")
        memory = len(devices) // (data * model)
    need = data * memory * model
    if need > len(devices):
        raise ConfigError(f"mesh data={data} x memory={memory} x model={model} needs {need} devices, "
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
