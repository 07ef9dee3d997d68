"""Memory accounting of a memory-parallel placement; refusing what does not fit (docs/msa.md §7).

Per device: the routing tier shard [R, Cs, K, H], the selected documents' pooled K/V that stay in
the KV cache of every router layer (R x B x k x Cd x K x H, keys and values), the model weights
(replicated) and an activation allowance. The content tier shard [2, R, Cs, K, H] is counted on the
host (pinned memory, one slab per local device) unless it is placed in device memory.
See docs/memory_parallel.md for MSA-4B at 100M tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels_pallas.common import cdiv
from msa_jax.memory.bank import SCALE, BankError, BankSpec


def human(n: float) -> str:
    """Bytes as text: '1.5 GiB', '12 MiB', '300 B'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def params_bytes(params) -> int:
    """Bytes of a parameter pytree (every leaf counted once)."""
    return int(sum(np.dtype(x.dtype).itemsize * math.prod(x.shape)
                   for x in jax.tree_util.tree_leaves(params)))


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Bytes of one placement. routing, fetched, weights, activations, content_device: per device;
    content_host: pinned host memory per process."""

    num_shards: int
    shard_chunks: int
    routing: int
    fetched: int
    weights: int
    activations: int
    content_device: int
    content_host: int

    @property
    def device(self) -> int:
        return self.routing + self.fetched + self.weights + self.activations + self.content_device

    def describe(self) -> str:
        parts = [f"routing tier shard {human(self.routing)}",
                 f"selected content {human(self.fetched)}", f"weights {human(self.weights)}",
                 f"activations {human(self.activations)}"]
        if self.content_device:
            parts.append(f"content tier shard {human(self.content_device)}")
        return (f"{self.num_shards} memory shard(s) of {self.shard_chunks} chunks: "
                f"{human(self.device)} per device ({', '.join(parts)}); "
                f"{human(self.content_host)} of pinned host memory per process")


@dataclasses.dataclass(frozen=True)
class Demand:
    """What a placement must hold besides the tiers: the question batch (per data replica), the
    documents selected per router layer, weights and activations per device."""

    batch: int = 1
    top_k_docs: int = 16
    weights: int = 0
    activations: int = 0


def chunk_bytes(spec: BankSpec) -> int:
    """Bytes of one pooled chunk in one content tier (K or V; all router layers)."""
    return (spec.num_router_layers * spec.num_kv_heads * spec.head_dim
            * jnp.dtype(spec.dtype).itemsize)


def routing_chunk_bytes(spec: BankSpec) -> int:
    """Bytes of one pooled chunk in the routing tier (all router layers; an int8 tier's
    scales included)."""
    total = 0
    for name in ("routing_keys", SCALE) if spec.quantized else ("routing_keys",):
        dtype, shape = spec.row_format(name)
        total += dtype.itemsize * math.prod(shape)
    return total


def describe_bank(spec: BankSpec, num_docs: int, num_chunks: int) -> str:
    per = chunk_bytes(spec) * num_chunks
    return (f"{num_docs} documents, {num_chunks} chunks: routing tier "
            f"{human(routing_chunk_bytes(spec) * num_chunks)}, content tier {human(2 * per)}")


def estimate(spec: BankSpec, num_shards: int, shard_chunks: int, max_doc_chunks: int,
             demand: Demand, data: int = 1, content_on_device: bool = False,
             devices_per_process: int = 1) -> Capacity:
    """The bytes of a layout of `num_shards` shards of `shard_chunks` chunk rows."""
    routing = shard_chunks * routing_chunk_bytes(spec)
    content = 2 * shard_chunks * chunk_bytes(spec)
    rows = cdiv(demand.batch, data)  # question rows per device
    fetched = 2 * rows * demand.top_k_docs * max_doc_chunks * chunk_bytes(spec)
    return Capacity(num_shards, shard_chunks, routing, fetched, demand.weights, demand.activations,
                    content if content_on_device else 0,
                    0 if content_on_device else content * devices_per_process)


def check(cap: Capacity, device_budget: int | None, host_budget: int | None,
          fewest_shards: Callable[[], int | None], total: str) -> None:
    """Raise BankError, with the numbers, when `cap` exceeds a budget. `fewest_shards()` gives the
    smallest shard count that would fit the device budget (None: none does); `total` describes the
    bank."""
    if device_budget is not None and cap.device > device_budget:
        need = fewest_shards()
        fixed = cap.weights + cap.fetched + cap.activations
        hint = (f"it needs at least {need} memory shards (devices on the memory axis)"
                if need else f"no number of memory shards makes it fit: weights, selected "
                f"content and activations alone take {human(fixed)}")
        raise BankError(f"the memory bank ({total}) does not fit the device budget of "
                        f"{human(device_budget)}: {cap.describe()}; {hint}")
    if host_budget is not None and cap.content_host > host_budget:
        raise BankError(f"the content tier of the memory bank ({total}) needs "
                        f"{human(cap.content_host)} of pinned host memory per process, over the "
                        f"host budget of {human(host_budget)} (on GPU, XLA's pinned-host pool is "
                        f"64 GiB per process by default: raise it with "
                        f"XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB, or spread the bank over more hosts)")


def fewest_shards(fits: Callable[[int], bool], most: int) -> int | None:
    """The smallest shard count in 1..most for which fits(count) holds (monotone), or None."""
    if most < 1 or not fits(most):
        return None
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo
