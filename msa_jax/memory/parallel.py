"""Memory parallel: a bank's documents sharded over a mesh (docs/msa.md §7, memory_parallel.md).

    placement = MemoryPlacement(memory_mesh())           # every device on the memory axis
    model.ask_tokens(rows, bank, placement=placement)    # same answers as on one device

The routing tier is, per router layer, a [S*Cs, K, H] device array sharded over the mesh's memory
axis (S shards of Cs chunk rows; documents balanced by chunk count, memory/shard_plan.py); the
content tier has the same layout in host memory (`content_memory_kind`). Per router layer,
`select` broadcasts the routing queries to every shard, which scores its own documents and keeps
a local top-k; the candidates are all-gathered and reduced to the global top-k, ties going to the
lower bank slot as `lax.top_k` does on one device, so answers do not depend on the number of
devices. `fetch` (memory/host_fetch.py) moves only the selected documents' chunks to device
memory. Question rows are split over the data axis.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernels_pallas import topk_documents
from kernels_pallas.common import next_pow2
from kernels_pallas.routing.reference import EPS as ROUTING_EPS  # cosine's norm floor
from msa_jax.config import ModelConfig
from msa_jax.memory import capacity
from msa_jax.memory.bank import SCALE, MemoryBank
from msa_jax.memory.distributed import DistributedBank
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.memory.host_arrays import release_pages
from msa_jax.memory.host_fetch import CHUNK_ROWS, DATA, DOC_ROWS, MEMORY, HostFetch
from msa_jax.memory.shard_plan import ShardPlan, plan_bank
from msa_jax.memory.unit_keys import unit_rows, unit_scales
from msa_jax.model.query import MemoryView, RoutingInfo
from msa_jax.model.router import document_scores
from msa_jax.sharding import fitted_spec, make_mesh, replicated

Array = jax.Array
NO_SLOT = np.iinfo(np.int32).max  # a candidate that is no document (sorts after every slot)
TIERS = ("routing_keys", "content_k", "content_v")
MOST_SHARDS = 4096  # the largest memory axis a capacity hint considers


@flax.struct.dataclass
class ShardedMemoryView(MemoryView):
    """A MemoryView laid out over the memory axis: each tier is a tuple of R arrays [S*Cs, K, H],
    chunk rows shard-major (row j of shard s is s * Cs + j); chunk_doc still holds bank slots, so
    the view is valid for `local_select` too.
    chunk_local_doc [S*Cs]: each row's document index inside its shard (-1 empty);
    local_doc_slot [S*Ms]: the bank slot of each shard-local document (-1 empty)."""

    chunk_local_doc: Array = None  # defaults only because MemoryView's last field has one
    local_doc_slot: Array = None


def memory_mesh(data: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, memory, model=1) mesh over `devices` (default: every device of every process) in
    which the devices of one memory shard belong to one process and each process's shards are
    consecutive (a process holds, and encodes, only its own documents)."""
    devices = list(devices if devices is not None else jax.devices())
    by_process: dict[int, list] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d)
    columns = []
    for p in sorted(by_process):
        if len(by_process[p]) % data:
            raise ValueError(f"process {p} has {len(by_process[p])} devices, not a multiple of "
                             f"data={data}")
        columns.append(np.array(by_process[p], dtype=object).reshape(data, -1))
    grid = np.concatenate(columns, axis=1)  # [data, S]
    return make_mesh(data, grid.shape[1], 1, devices=list(grid.reshape(-1)))


def merge_candidates(scores: Array, slots: Array, k: int) -> tuple[Array, Array, Array]:
    """Candidates of every shard, scores and slots [B, n] -> the k best (ids, scores, valid) [B, k],
    by descending score then ascending slot: what top-k over all documents picks."""
    if scores.shape[1] < k:  # fewer candidates than k: pad with non-documents
        pad = ((0, 0), (0, k - scores.shape[1]))
        scores = jnp.pad(scores, pad, constant_values=-jnp.inf)
        slots = jnp.pad(slots, pad, constant_values=NO_SLOT)
    neg, slots = lax.sort((0.0 - scores, slots), dimension=1, num_keys=2)  # 0.0 - x: no -0.0
    top = -neg[:, :k]
    valid = jnp.isfinite(top)
    return jnp.where(valid, slots[:, :k], 0), top, valid


@dataclasses.dataclass(frozen=True)
class ShardedSelect:
    """The `select` hook of a MemoryPlacement (model/query.py SelectFn): local scores and top-k
    per memory shard, candidates gathered, global top-k. Hashable: a static jit argument."""

    mesh: Mesh

    def __call__(self, cfg: ModelConfig, memory: ShardedMemoryView, r: int, qr: Array,
                 routing_mask: Array) -> RoutingInfo:
        k = min(cfg.msa.top_k_docs, memory.num_docs)
        ms = memory.local_doc_slot.shape[0] // self.mesh.shape[MEMORY]  # documents per shard
        local_k = min(k, ms)
        rows = fitted_spec(self.mesh, qr.shape[:1], ("batch",))  # question rows

        def shard(qr, mask, kr, local_doc, doc_slot, *scale):  # qr [b,T,N,H]; kr [Cs,K,H];
            # doc_slot [Ms]; scale: () or ([Cs, K] of an int8 tier)
            scores = document_scores(cfg, qr, mask, kr, local_doc, ms, cfg.msa.inference_cosine,
                                     *scale, unit_keys=memory.unit_keys)  # [b, Ms]
            top, local = topk_documents(scores, local_k)  # [b, k']
            slot = jnp.where(jnp.isfinite(top), doc_slot[local], NO_SLOT)
            gather = lambda x: lax.all_gather(x, MEMORY, axis=1, tiled=True,  # noqa: E731
                                              to="invarying")  # [b, S*k']
            return merge_candidates(gather(top), gather(slot), k)

        scale = () if memory.routing_scale is None else (memory.routing_scale[r],)
        ids, scores, valid = jax.shard_map(
            shard, mesh=self.mesh,
            in_specs=(rows, rows, CHUNK_ROWS, CHUNK_ROWS, DOC_ROWS) + (CHUNK_ROWS,) * len(scale),
            out_specs=(rows,) * 3)(qr, routing_mask, memory.routing_keys[r],
                                      memory.chunk_local_doc, memory.local_doc_slot, *scale)
        return RoutingInfo(ids, scores, valid, None)


def _slab(plan: ShardPlan, bank, name: str, r: int, s: int, unit: bool, *rows) -> np.ndarray:
    """Shard s's slab of `name` for router layer r (`rows`: ShardPlan.tier_slab's window of an
    append); for a unit-key view normalised in place (memory/unit_keys.py): float routing rows
    -> unit rows, an int8 tier's scales -> the scales that make its heads unit vectors."""
    slab = plan.tier_slab(s, bank.tier(name)[r], *rows)
    if unit and name == SCALE:
        unit_scales(plan.tier_slab(s, bank.tier("routing_keys")[r], *rows), slab, slab,
                    ROUTING_EPS)
    elif unit and name == "routing_keys" and not bank.spec.quantized:
        unit_rows(slab, slab, ROUTING_EPS)
    return slab


@dataclasses.dataclass
class _Placed:
    plan: ShardPlan
    view: ShardedMemoryView
    snapshot: tuple


def _snapshot(bank) -> tuple:
    """What identifies a bank's contents (per slot): any change but an append alters a prefix."""
    if isinstance(bank, DistributedBank):
        return ()  # immutable
    return (list(bank.doc_ids), list(bank.doc_num_chunks), list(bank.doc_chunk_offset),
            bank.doc_tokens.keys())


class MemoryPlacement:
    """Where a bank lives on a mesh with `data` and `memory` axes; see the module docstring.

    content_memory_kind: "pinned_host" (the paper's layout), "unpinned_host" or "device".
    device_budget_bytes / host_budget_bytes: refuse (BankError, with the numbers) a bank whose
    shard does not fit, per device / in pinned host memory per process; `demand` says what else
    a device holds (question batch, top-k, weights, activations).
    `view`, `select`, `fetch` are what `MSAModel.ask(..., placement=)` uses.
    """

    def __init__(self, mesh: Mesh | None = None, content_memory_kind: str = "pinned_host",
                 device_budget_bytes: int | None = None, host_budget_bytes: int | None = None,
                 demand: capacity.Demand = capacity.Demand()):
        self.mesh = mesh if mesh is not None else memory_mesh()
        missing = {DATA, MEMORY} - set(self.mesh.axis_names)
        if missing:
            raise ValueError(f"the mesh needs axes {sorted(missing)} (msa_jax.sharding.make_mesh)")
        if content_memory_kind not in ("pinned_host", "unpinned_host", "device"):
            raise ValueError(f"content_memory_kind={content_memory_kind!r}; expected pinned_host, "
                             f"unpinned_host or device")
        self.content_memory_kind = content_memory_kind
        self.device_budget_bytes, self.host_budget_bytes = device_budget_bytes, host_budget_bytes
        self.demand = demand
        self.select = ShardedSelect(self.mesh)
        self.fetch = HostFetch(self.mesh)
        self._placed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._writers: dict[str, object] = {}
        self.stats = {"built": 0, "appended": 0}  # views built from scratch / grown in place

    @classmethod
    def for_bank(cls, bank, device_budget_bytes: int, devices: Sequence[jax.Device] | None = None,
                 data: int = 1, **kwargs) -> "MemoryPlacement":
        """A placement over the fewest devices (memory shards) whose per-device share of `bank`
        fits `device_budget_bytes`; BankError (with the numbers) if all of `devices` do not."""
        devices = list(devices if devices is not None else jax.devices())
        probe = cls(memory_mesh(data, devices), device_budget_bytes=device_budget_bytes, **kwargs)
        probe.check_capacity(bank)  # refuses up front when even every device is not enough
        need = capacity.fewest_shards(lambda n: probe._fits(bank, n), len(devices) // data)
        return cls(memory_mesh(data, devices[:need * data]),
                   device_budget_bytes=device_budget_bytes, **kwargs)

    @property
    def num_shards(self) -> int:
        return self.mesh.shape[MEMORY]

    # -- planning --------------------------------------------------------------------------------
    def plan(self, bank, num_shards: int | None = None) -> ShardPlan:
        """The shard layout of `bank` (a MemoryBank or a DistributedBank) on this mesh, or, for
        capacity estimates, on `num_shards` shards of one process."""
        if isinstance(bank, DistributedBank):
            if num_shards is None:
                return bank.shard_plan(self.mesh)  # collectives: every process calls it
            return plan_bank(bank.doc_num_chunks, np.zeros(bank.num_slots), num_shards)
        return plan_bank(bank.doc_num_chunks, bank.doc_chunk_offset, num_shards or self.num_shards)

    def capacity(self, bank, plan: ShardPlan | None = None) -> capacity.Capacity:
        """Bytes per device and per process of `bank` on this placement."""
        plan = plan or self.plan(bank)
        local = sum(d.process_index == jax.process_index() for d in self.mesh.devices.flat)
        return capacity.estimate(bank.spec, plan.num_shards, plan.shard_chunks,
                                 plan.max_doc_chunks, self.demand, self.mesh.shape[DATA],
                                 self.content_memory_kind == "device", local)

    def _fits(self, bank, num_shards: int) -> bool:
        """Whether `bank` over num_shards memory shards fits the device budget."""
        p = self.plan(bank, num_shards)
        cap = capacity.estimate(bank.spec, num_shards, p.shard_chunks, p.max_doc_chunks,
                                self.demand, self.mesh.shape[DATA],
                                self.content_memory_kind == "device")
        return self.device_budget_bytes is None or cap.device <= self.device_budget_bytes

    def check_capacity(self, bank, plan: ShardPlan | None = None):
        """Raise BankError (with the numbers) if `bank` does not fit the budgets."""
        cap = self.capacity(bank, plan)
        total = capacity.describe_bank(bank.spec, bank.num_docs, int(np.sum(bank.doc_num_chunks)))
        capacity.check(cap, self.device_budget_bytes, self.host_budget_bytes,
                       lambda: capacity.fewest_shards(lambda n: self._fits(bank, n), MOST_SHARDS),
                       total)

    # -- the view --------------------------------------------------------------------------------
    def view(self, bank, unit_keys: bool = False) -> ShardedMemoryView:
        """The sharded MemoryView of `bank`, cached until the bank changes; appended documents
        are written into the existing tiers in place (only their rows move) when they fit.

        `unit_keys` (cosine routing, `cfg.msa.inference_cosine`; as `MemoryBank.view`): each
        shard's routing rows are normalised once as the shard is filled (float32 rows; an int8
        tier's scales), and the scan skips normalising every key per question, which on XLA:CPU
        also writes a normalised copy of the shard's tier on every question. A bfloat16 tier is
        left as it is and normalised per question (it cannot hold unit vectors exactly)."""
        unit = unit_keys and not bank.spec.narrow_routing
        snap = _snapshot(bank)
        placed = self._placed.get(bank)
        if placed is not None and placed.view.unit_keys != unit:
            placed = None  # laid out for the other scoring: rebuilt
        if placed is not None and placed.snapshot == snap:
            return placed.view
        grown = self._append(bank, placed, snap) if placed is not None else None
        if grown is None:
            plan = self.plan(bank)
            self.check_capacity(bank, plan)
            grown = _Placed(plan, self._assemble(bank, plan, self._tiers(bank, plan, unit), unit),
                            snap)
            self.stats["built"] += 1
        else:
            self.stats["appended"] += 1
        self._placed[bank] = grown
        return grown.view

    def encode(self, cfg: ModelConfig, params, docs: Sequence[DocInput | Sequence[int]],
               bank: MemoryBank | None = None, **kwargs) -> MemoryBank:
        """Encode documents straight into the sharded tiers: after each stage-1 block its
        documents' chunks are written into their shards (memory/encoder.py for kwargs).
        Token-id lists get ids "n", "n+1", ... after the bank's slots."""
        first = bank.num_slots if bank is not None else 0
        docs = [d if isinstance(d, DocInput) else DocInput(str(first + i), tuple(map(int, d)))
                for i, d in enumerate(docs)]
        kwargs.setdefault("show_progress", False)
        def on_block(b):  # the view `ask` will use
            return self.view(b, unit_keys=cfg.msa.inference_cosine)
        return encode_documents(cfg, params, docs, bank=bank, on_block=on_block, **kwargs)

    # -- building arrays -------------------------------------------------------------------------
    def _sharded(self, shape, spec: PartitionSpec, kind: str, make, rows: int) -> Array:
        """A global array whose memory-axis shard s is make(s) (built once per shard, only for
        the shards this process holds)."""
        axis = list(spec).index(MEMORY)
        built: dict[int, np.ndarray] = {}

        def piece(index):
            s = (index[axis].start or 0) // rows
            if s not in built:
                built[s] = make(s)
            return built[s]

        sharding = NamedSharding(self.mesh, spec, memory_kind=kind)
        return jax.make_array_from_callback(shape, sharding, piece)

    def _replicated(self, x: np.ndarray) -> Array:
        return jax.make_array_from_callback(x.shape, replicated(self.mesh),
                                            lambda index: x[index])

    def _kind(self, name: str) -> str:
        return "device" if name in ("routing_keys", SCALE) else self.content_memory_kind

    def _tiers(self, bank, plan: ShardPlan, unit: bool) -> dict[str, tuple[Array, ...]]:
        """Per stored array (the tiers, the scales of an int8 routing tier), R arrays [S*Cs, K, H]
        (scales [S*Cs, K]), one per router layer; `unit`: routing rows normalised (_unit_slab)."""
        rows = plan.num_shards * plan.shard_chunks

        def layer(name: str, r: int) -> Array:
            shape = bank.tier(name).shape[2:]  # of [R, C, K, H], this process's chunks
            return self._sharded((rows,) + shape, CHUNK_ROWS, self._kind(name),
                                 lambda i: _slab(plan, bank, name, r, i, unit),
                                 plan.shard_chunks)  # built now

        tiers = {}
        for name in bank.spec.arrays:
            tiers[name] = tuple(layer(name, r) for r in range(bank.spec.num_router_layers))
            release_pages(bank.tier(name))  # a loaded bank's mapped pages: copied, reclaimable
        return tiers

    def _assemble(self, bank, plan: ShardPlan, tiers: dict, unit: bool) -> ShardedMemoryView:
        s, cs, ms = plan.num_shards, plan.shard_chunks, plan.shard_docs
        per_chunk = lambda f: self._sharded((s * cs,), CHUNK_ROWS, "device", f, cs)  # noqa: E731
        offset, count = plan.doc_arrays()
        return ShardedMemoryView(
            tiers["routing_keys"], tiers["content_k"], tiers["content_v"],
            per_chunk(plan.chunk_doc), self._replicated(offset), self._replicated(count),
            tiers.get(SCALE), max_doc_chunks=plan.max_doc_chunks, unit_keys=unit,
            chunk_local_doc=per_chunk(lambda i: plan.chunk_doc(i, local=True)),
            local_doc_slot=self._sharded((s * ms,), DOC_ROWS, "device", plan.local_doc_slot, ms))

    def _append(self, bank, placed: _Placed, snap: tuple) -> _Placed | None:
        """Write appended documents into the existing tiers; None if a rebuild is needed."""
        old = placed.plan
        n = len(old.assign.shard)
        if not snap or any(now[:n] != before for now, before in zip(snap, placed.snapshot)):
            return None  # not an append (deleted, compacted, or a distributed bank)
        plan = plan_bank(bank.doc_num_chunks, bank.doc_chunk_offset, old.num_shards, old.assign)
        used = old.assign.used
        grow = int((plan.assign.used - used).max(initial=0))
        width = next_pow2(grow, 8)  # powers of two: few compiled writers
        if plan.shape_key != old.shape_key or np.any(used + width > old.shard_chunks):
            return None
        starts = self._sharded((old.num_shards,), CHUNK_ROWS, "device",
                               lambda i: used[i:i + 1].astype(np.int32), 1)
        unit = placed.view.unit_keys
        tiers = {}
        for name in bank.spec.arrays:
            kind, layers = self._kind(name), []
            shape = (old.num_shards * width,) + bank.spec.row_format(name)[1][1:]
            for r, current in enumerate(getattr(placed.view, name)):
                rows = self._sharded(shape, CHUNK_ROWS, kind, lambda i, r=r: _slab(
                    plan, bank, name, r, i, unit, n, used[i], width), width)  # [S*u, K, H]
                layers.append(self._writer(kind)(current, rows, starts))
            tiers[name] = tuple(layers)
        return _Placed(plan, self._assemble(bank, plan, tiers, unit), snap)

    def _writer(self, kind: str):
        """jit: (tier [S*Cs, ...], rows [S*u, ...], starts [S]) -> tier with shard s's rows
        written at starts[s]; the old tier is donated (updated in place)."""
        if kind not in self._writers:
            spec = CHUNK_ROWS
            write = lambda t, x, at: lax.dynamic_update_slice(  # noqa: E731
                t, x, (at[0],) + (0,) * (t.ndim - 1))
            self._writers[kind] = jax.jit(
                jax.shard_map(write, mesh=self.mesh, in_specs=(spec, spec, spec), out_specs=spec),
                donate_argnums=0, out_shardings=NamedSharding(self.mesh, spec, memory_kind=kind))
        return self._writers[kind]

