"""Fetching the selected documents' pooled K/V from a host-resident content tier (docs/msa.md §7).

The content tier (per router layer [S*Cs, K, H]) lives in host memory (`memory_kind="pinned_host"`),
sharded over the mesh's memory axis like the routing tier. A host array cannot be gathered inside
a computation (XLA wants every operand of a gather in one memory space), but it can be dynamically
sliced. So each memory shard walks the selected documents it owns, slices each one's window of Cd
chunk rows out of its host slab and moves only that window to device memory; a `psum` over the
memory axis then hands every device the selected chunks of its batch rows (each document has
exactly one owner, the others contribute zeros). Device-side traffic per question is B x k x Cd
rows per router layer, whatever the size of the bank.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from msa_jax.model.query import MemoryView
from msa_jax.sharding import fitted_spec, logical_to_spec, mesh_axis

Array = jax.Array
# From the one logical-axis table (msa_jax/sharding.py RULES):
MEMORY = mesh_axis("chunks")  # the mesh axis memory shards (chunk rows, documents) live on
DATA = mesh_axis("batch")  # the mesh axis question rows are split over
CHUNK_ROWS = logical_to_spec(("chunks",))  # a tier [S*Cs, K, H] or per-chunk array [S*Cs]
DOC_ROWS = logical_to_spec(("docs",))  # a per-document array [S*Ms]


def _own_windows(tiers: tuple[Array, ...], starts: Array, window: int,
                 axes: tuple[str, ...], unrolled: bool = False) -> tuple[Array, ...]:
    """tiers: [Cs, K, H] each (this shard, host); starts [D] global chunk rows of the selected
    documents -> per tier [D, window, K, H] in device memory: the windows this shard owns, zeros
    elsewhere. `axes`: the mesh axes the result varies over (for shard_map's type check).
    `unrolled` (CPU meshes, where moving a window costs nothing): every selected document's
    window sliced by its own op, owned or not, with no loop. XLA:CPU would carry the tier
    through the loop below and, for a bfloat16 tier, convert the whole shard to float32 on
    every question (1.6x the tier bytes, transient, measured at 4M tokens)."""
    cs, kh = tiers[0].shape[0], tiers[0].shape[1:]
    local = starts - lax.axis_index(MEMORY) * cs  # [D]
    own = (local >= 0) & (local < cs)
    if unrolled:
        def windows(tier):  # [D, window, K, H], slices clamped into the shard as below
            blocks = jnp.stack([jax.device_put(lax.dynamic_slice(
                tier, (local[d], 0, 0), (window,) + kh), jax.memory.Space.Device)
                for d in range(starts.shape[0])])
            return jnp.where(own[:, None, None, None], blocks, jnp.zeros((), tier.dtype))
        return tuple(windows(t) for t in tiers)
    order = jnp.argsort(jnp.logical_not(own), stable=True)  # owned documents first
    outs = tuple(lax.pcast(jnp.zeros((starts.shape[0], window) + kh, t.dtype), axes, to="varying")
                 for t in tiers)

    def body(j, outs):
        d = order[j]
        new = []
        for out, tier in zip(outs, tiers):
            block = lax.dynamic_slice(tier, (local[d], 0, 0), (window,) + kh)
            block = jax.device_put(block, jax.memory.Space.Device)  # host -> device: this window
            new.append(lax.dynamic_update_slice(out, block[None], (d, 0, 0, 0)))
        return tuple(new)

    return lax.fori_loop(0, jnp.sum(own), body, outs)  # only the owned documents


@dataclasses.dataclass(frozen=True)
class HostFetch:
    """The `fetch` hook of a MemoryPlacement (model/query.py FetchFn); hashable, so a static jit
    argument. Relies on chunk_idx being laid out [B, k, max_doc_chunks] with each document's
    chunks consecutive (model/router.py `selected_chunks`): one window per document.
    `window_loop`: move only the owned windows, in a loop (None: unless the mesh is of CPU
    devices; see `_own_windows`)."""

    mesh: Mesh
    window_loop: bool | None = None

    def __call__(self, memory: MemoryView, r: int, chunk_idx: Array) -> tuple[Array, Array]:
        b, s = chunk_idx.shape
        cd = memory.max_doc_chunks
        if s % cd:
            raise ValueError(f"chunk_idx has {s} chunks per row, not a multiple of "
                             f"max_doc_chunks={cd}")
        starts = chunk_idx.reshape(b, s // cd, cd)[:, :, 0]  # [B, k] first chunk of each document
        rows = fitted_spec(self.mesh, (b,), ("batch",))  # question rows
        loop = self.window_loop if self.window_loop is not None else \
            self.mesh.devices.flat[0].platform != "cpu"

        def shard(ck, cv, starts):  # ck, cv [Cs, K, H] (host); starts [b, k]
            flat = starts.reshape(-1)
            axes = (MEMORY,) if rows[0] is None else (MEMORY, DATA)
            k, v = _own_windows((ck, cv), flat, cd, axes, not loop)  # [b*k, Cd, K, H] each
            shape = starts.shape[:1] + (s,) + ck.shape[1:]
            return lax.psum(k.reshape(shape), MEMORY), lax.psum(v.reshape(shape), MEMORY)

        tier = CHUNK_ROWS
        return jax.shard_map(shard, mesh=self.mesh, in_specs=(tier, tier, rows),
                             out_specs=(rows, rows))(memory.content_k[r],
                                                           memory.content_v[r], starts)
