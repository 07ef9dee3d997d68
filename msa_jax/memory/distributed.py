"""Memory parallel across processes (hosts) with `jax.distributed` (docs/memory_parallel.md).

Each process encodes and holds only its own documents (a plain MemoryBank of them); a
`DistributedBank` over it agrees with the other processes on the global slot numbering (process
p's slots follow those of processes 0..p-1) and on the shard layout, exchanging only per-document
metadata through JAX's own collectives (`multihost_utils.process_allgather`). The tiers stay where
they were encoded: MemoryPlacement builds each process's shards from its local arrays.

A peer that dies makes the next collective fail (gloo: "connection closed by peer"); `guard`
turns that into a PeerLostError naming the lost peer (exit status EXIT_PEER_LOST), and a
collective that hangs instead (a peer stopped but not closed) into a clear message and exit after a
bounded time (status EXIT_STEP_TIMEOUT: nothing was detected, only waited for): a collective stuck
in the runtime cannot be interrupted from Python. The runtime's heartbeat (`heartbeat_timeout_s`)
is the last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from msa_jax.memory.bank import BankError, DocumentSlots, MemoryBank
from msa_jax.memory.shard_plan import Assignment, ShardPlan
from msa_jax.sharding import mesh_axis

MEMORY = mesh_axis("docs")  # the mesh axis documents are sharded over (msa_jax/sharding.py RULES)

EXIT_PEER_LOST = 75  # exit status of a process that detected the loss of a peer
EXIT_STEP_TIMEOUT = 76  # exit status of a process whose step outlived guard's watchdog
_PEER_LOSS = ("connection closed by peer", "connection reset", "broken pipe", "gloo",
              "heartbeat", "coordination service", "unavailable", "deadline_exceeded",
              "task has failed", "barrier")


class PeerLostError(RuntimeError):
    """A process of the distributed run is gone: the collective could not complete."""


def initialize(coordinator_address: str, num_processes: int, process_id: int, *,
               timeout_s: int = 120, heartbeat_timeout_s: int = 30, shutdown_timeout_s: int = 30,
               local_device_ids=None):
    """`jax.distributed.initialize` with bounded waits (gloo collectives on CPU)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; harmless on GPU
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=int(timeout_s),
                               heartbeat_timeout_seconds=int(heartbeat_timeout_s),
                               shutdown_timeout_seconds=int(shutdown_timeout_s))


def _expire(what: str, timeout_s: float):
    sys.stderr.write(f"msa_jax: {what} did not finish within {timeout_s:g} s: a peer process of "
                     f"the jax.distributed run is not answering (dead or hung); exiting with "
                     f"status {EXIT_STEP_TIMEOUT}\n")
    sys.stderr.flush()
    os._exit(EXIT_STEP_TIMEOUT)


@contextlib.contextmanager
def guard(what: str, timeout_s: float | None = 120.0):
    """Run a distributed step: a runtime error caused by a lost peer becomes PeerLostError; a step
    still running after timeout_s ends the process (message on stderr, exit EXIT_STEP_TIMEOUT)."""
    timer = threading.Timer(timeout_s, _expire, (what, timeout_s)) if timeout_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        text = str(e).lower()
        if any(m in text for m in _PEER_LOSS):
            first = str(e).strip().splitlines()[0][:300]
            raise PeerLostError(f"{what}: process {jax.process_index()} lost {_peers()} of the "
                                f"jax.distributed run, a peer process is gone ({first})") from e
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _peers() -> str:
    """The peers a lost connection can come from (the runtime's error does not say which)."""
    others = [p for p in range(jax.process_count()) if p != jax.process_index()]
    return f"peer process {others[0]}" if len(others) == 1 else f"one of processes {others}"


def exit_peer_lost(err: BaseException):
    """Report `err` and end the process now. (A normal exit would wait on the runtime's shutdown
    barrier, which a dead peer never reaches, and then abort.)"""
    sys.stderr.write(f"msa_jax: {err}\n")
    sys.stderr.flush()
    os._exit(EXIT_PEER_LOST)


def _allgather_rows(x: np.ndarray) -> list[np.ndarray]:
    """Every process's 1-D integer array (lengths may differ; values fit int32: JAX's default
    integer width), in process order, as int64."""
    x = np.asarray(x, np.int32)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(x)], np.int32)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(max(int(sizes.max()), 1), np.int32)
    padded[:len(x)] = x
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [rows[p, :int(n)].astype(np.int64) for p, n in enumerate(sizes)]


def _allgather_json(value) -> list:
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    return [json.loads(bytes(row.astype(np.uint8)).decode()) for row in _allgather_rows(data)]


class DistributedBank(DocumentSlots):
    """The global view of per-process banks (this process's documents in `local`).

    Slots are global: process p's local slot i is slot `slot_offset[p] + i`. Offers what
    `MSAModel.ask_tokens` and `MemoryPlacement` read: spec, prefix K/V, doc_ids, doc_num_chunks,
    num_docs, tier() (this process's chunks). doc_texts are gathered; doc_tokens are known for
    local documents only (None elsewhere).
    """

    def __init__(self, local: MemoryBank, timeout_s: float = 120.0):
        self.local, self.timeout_s = local, timeout_s
        self.spec, self.prefix_k, self.prefix_v = local.spec, local.prefix_k, local.prefix_v
        with guard("exchanging the banks' metadata", timeout_s):
            self._exchange(local)
        self._plans: dict = {}

    def _exchange(self, local: MemoryBank):
        specs = _allgather_json([local.spec.fingerprint, local.spec.dtype,
                                 local.spec.routing_dtype])
        if any(s != specs[0] for s in specs):
            raise BankError(f"the processes' banks differ in model or dtypes: {specs}")
        counts = _allgather_rows(np.asarray(local.doc_num_chunks, np.int64))
        self.process = jax.process_index()
        self.slot_offset = np.concatenate([[0], np.cumsum([len(c) for c in counts])])
        self.doc_num_chunks = [int(c) for part in counts for c in part]
        meta = _allgather_json([local.doc_ids, list(local.doc_texts)])
        self.doc_ids = [d for ids, _ in meta for d in ids]
        self._index_ids()
        self.doc_texts = [t for _, texts in meta for t in texts]
        first = int(self.slot_offset[self.process])
        self.doc_tokens = [None] * len(self.doc_ids)
        self.doc_tokens[first:first + local.num_slots] = local.doc_tokens

    def tier(self, name: str) -> np.ndarray:
        """This process's chunks of a tier, [R, C_local, K, H]."""
        return self.local.tier(name)

    def _my_shards(self, mesh) -> tuple[int, int]:
        """(first memory shard, count) of this process; each shard must live in one process."""
        axis = mesh.axis_names.index(MEMORY)
        owners = []
        for s in range(mesh.shape[MEMORY]):
            procs = {d.process_index for d in np.take(mesh.devices, s, axis=axis).flat}
            if len(procs) != 1:
                raise BankError(f"memory shard {s} spans processes {sorted(procs)}: build the mesh "
                                f"with msa_jax.memory.parallel.memory_mesh()")
            owners.append(procs.pop())
        mine = [s for s, p in enumerate(owners) if p == self.process]
        if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
            raise BankError(f"process {self.process} holds memory shards {mine}; it needs a "
                            f"non-empty consecutive run (memory_mesh())")
        return mine[0], len(mine)

    def shard_plan(self, mesh) -> ShardPlan:
        """The global layout: each process balances its documents over its own shards; the
        assignments are exchanged so every process knows every document's chunk rows."""
        key = mesh
        if key in self._plans:
            return self._plans[key]
        with guard("exchanging the shard layout", self.timeout_s):
            first, count = self._my_shards(mesh)
            num_shards = mesh.shape[MEMORY]
            mine = Assignment.empty(count).extend(self.local.doc_num_chunks)
            mine = mine.shifted(first, num_shards)
            fields = [np.concatenate(_allgather_rows(getattr(mine, f)))  # [n] in slot order
                      for f in ("shard", "row", "local", "count")]
            used = np.sum(_allgather_rows(mine.used), axis=0)
            docs = np.sum(_allgather_rows(mine.docs), axis=0)
            assign = Assignment(*fields, used, docs)
            self._plans[key] = ShardPlan.build(assign, self.local.doc_chunk_offset,
                                               int(self.slot_offset[self.process]))
        return self._plans[key]

    def __repr__(self):
        return (f"DistributedBank({self.num_docs} documents over {len(self.slot_offset) - 1} "
                f"processes; this process {self.process} holds {self.local!r})")
