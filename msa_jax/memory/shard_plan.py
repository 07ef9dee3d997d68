"""Documents -> memory shards, and the chunk layout of the sharded tiers (docs/msa.md §7).

A document goes whole to one shard. Shards are balanced by chunk count, greedily in slot order: the
next document goes to the shard holding the fewest chunks (the lowest shard on a tie). The rule is
online, so appending documents never moves the ones already placed and the sharded tiers can grow
in place while a corpus is being encoded.

Inside a shard, documents sit in ascending slot order with their chunks contiguous from row 0. All
shards have the same number of chunk rows Cs (rounded up as MemoryBank rounds its capacities, with
at least `max_doc_chunks` spare rows after the last chunk, so that a document's window of
max_doc_chunks rows never runs past its shard) and of local document slots Ms. Row j of shard s is
global chunk row s * Cs + j.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from kernels_pallas.common import geometric_size  # the bank's rule: M must match bank.view()
from msa_jax.memory.host_arrays import aligned_empty

MIN_SHARD_CHUNKS = 64
MIN_SHARD_DOCS = 8
MIN_DOC_SLOTS = 64  # as MemoryBank.view, so that top-k = min(k, M) is the same on every mesh


@dataclasses.dataclass
class Assignment:
    """Where each document of a run of slots went. Arrays [n] int64: shard (-1: no chunks, e.g.
    deleted), first row inside the shard, index among the shard's documents, chunk count;
    used, docs [S]: chunks and documents per shard."""

    shard: np.ndarray
    row: np.ndarray
    local: np.ndarray
    count: np.ndarray
    used: np.ndarray
    docs: np.ndarray

    @classmethod
    def empty(cls, num_shards: int) -> "Assignment":
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, np.zeros(num_shards, np.int64), np.zeros(num_shards, np.int64))

    def extend(self, counts) -> "Assignment":
        """Continue the greedy assignment with documents of `counts` chunks (in slot order)."""
        counts = np.asarray(counts, np.int64)
        used, docs = self.used.copy(), self.docs.copy()
        heap = [(int(u), s) for s, u in enumerate(used)]
        heapq.heapify(heap)
        new = np.full((3, len(counts)), -1, np.int64)  # shard, row, local
        for i, c in enumerate(counts.tolist()):
            if c <= 0:
                continue
            u, s = heapq.heappop(heap)
            new[:, i] = (s, u, docs[s])
            used[s], docs[s] = u + c, docs[s] + 1
            heapq.heappush(heap, (u + c, s))
        cat = lambda a, b: np.concatenate([a, b])  # noqa: E731
        return Assignment(cat(self.shard, new[0]), cat(self.row, new[1]), cat(self.local, new[2]),
                          cat(self.count, counts), used, docs)

    def shifted(self, first_shard: int, num_shards: int) -> "Assignment":
        """This (process-local) assignment as shards first_shard.. of a mesh of num_shards."""
        used = np.zeros(num_shards, np.int64)
        docs = np.zeros(num_shards, np.int64)
        n = len(self.used)
        used[first_shard:first_shard + n], docs[first_shard:first_shard + n] = self.used, self.docs
        shard = np.where(self.shard >= 0, self.shard + first_shard, -1)
        return Assignment(shard, self.row, self.local, self.count, used, docs)


def shape_of(assign: Assignment, num_slots: int) -> tuple[int, int, int, int]:
    """(Cs, Ms, M, max_doc_chunks) of the layout holding this assignment."""
    cd = geometric_size(int(assign.count.max(initial=0)) if len(assign.count) else 1, 1)
    cs = geometric_size(int(assign.used.max(initial=0)) + cd, MIN_SHARD_CHUNKS)
    ms = geometric_size(int(assign.docs.max(initial=0)), MIN_SHARD_DOCS)
    return cs, ms, geometric_size(num_slots, MIN_DOC_SLOTS), cd


@dataclasses.dataclass
class ShardPlan:
    """The global layout, and the source of the shards this process holds.

    `source` maps a held shard to (slots [n], source chunk offsets [n]): its documents in order
    and where their chunks start in the host tiers this process reads (a bank's `tier()`).
    """

    assign: Assignment  # over every slot of the (global) bank
    num_shards: int  # S
    shard_chunks: int  # Cs
    shard_docs: int  # Ms
    num_doc_slots: int  # M
    max_doc_chunks: int  # Cd
    source: dict[int, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def build(cls, assign: Assignment, src_offsets, first_slot: int = 0) -> "ShardPlan":
        """Plan from a global assignment; this process holds slots first_slot.. (len(src_offsets)
        of them), whose chunks start at src_offsets in its host tiers."""
        src_offsets = np.asarray(src_offsets, np.int64)
        cs, ms, m, cd = shape_of(assign, len(assign.shard))
        mine = np.arange(first_slot, first_slot + len(src_offsets))
        shard = assign.shard[mine]
        order = np.argsort(shard, kind="stable")  # by shard, slots ascending within one
        bounds = np.searchsorted(shard[order], np.arange(len(assign.used) + 1))
        source = {}
        for s in range(len(assign.used)):
            slots = mine[order[bounds[s]:bounds[s + 1]]]
            if len(slots):
                source[s] = (slots, src_offsets[slots - first_slot])
        return cls(assign, len(assign.used), cs, ms, m, cd, source)

    @property
    def shape_key(self) -> tuple[int, int, int, int, int]:
        return (self.num_shards, self.shard_chunks, self.shard_docs, self.num_doc_slots,
                self.max_doc_chunks)

    # -- replicated document arrays [M] -----------------------------------------------------
    def doc_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(global chunk row of each slot's first chunk, chunk count), int32 [M]; 0 when absent."""
        a = self.assign
        offset = np.zeros(self.num_doc_slots, np.int32)
        count = np.zeros(self.num_doc_slots, np.int32)
        placed = a.shard >= 0
        n = len(a.shard)
        offset[:n] = np.where(placed, a.shard * self.shard_chunks + a.row, 0)
        count[:n] = np.where(placed, a.count, 0)
        return offset, count

    # -- one shard's arrays ------------------------------------------------------------------
    def _docs_of(self, s: int, from_slot: int = 0):
        slots, src = self.source.get(s, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        if from_slot:
            keep = slots >= from_slot
            slots, src = slots[keep], src[keep]
        return slots, src, self.assign.row[slots], self.assign.count[slots]

    def rows(self, s: int, from_slot: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(rows inside shard s, their source chunk offsets) of the chunks shard s holds (of the
        documents in slots >= from_slot)."""
        slots, src, row, count = self._docs_of(s, from_slot)
        total = int(count.sum())
        within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        return np.repeat(row, count) + within, np.repeat(src, count) + within

    def chunk_doc(self, s: int, local: bool = False) -> np.ndarray:
        """[Cs] int32: the slot (or, with `local`, the shard-local index) owning each row; -1."""
        slots, _, row, count = self._docs_of(s)
        out = np.full(self.shard_chunks, -1, np.int32)
        owner = self.assign.local[slots] if local else slots
        out[:int(count.sum())] = np.repeat(owner, count)  # rows are contiguous in slot order
        return out

    def local_doc_slot(self, s: int) -> np.ndarray:
        """[Ms] int32: the global slot of each local document of shard s; -1 for empty."""
        slots = self._docs_of(s)[0]
        out = np.full(self.shard_docs, -1, np.int32)
        out[self.assign.local[slots]] = slots
        return out

    def tier_slab(self, s: int, tier: np.ndarray, from_slot: int = 0, base: int = 0,
                  width: int | None = None) -> np.ndarray:
        """Shard s of one router layer's tier: tier [C, K, H] (host, this process's chunks) ->
        [Cs, K, H]. With from_slot/base/width: rows base..base+width of the shard holding only
        the chunks of slots >= from_slot (what appending those documents writes)."""
        rows, src = self.rows(s, from_slot)
        # aligned: a CPU device_put aliases the slab rather than copying it (host_arrays)
        slab = aligned_empty((width or self.shard_chunks,) + tier.shape[1:], tier.dtype)
        slab[...] = 0
        slab[rows - base] = tier[src]
        return slab


def plan_bank(doc_num_chunks, doc_chunk_offset, num_shards: int,
              previous: Assignment | None = None) -> ShardPlan:
    """The plan of a whole (single-process) bank; `previous` (an assignment of a prefix of its
    slots, from before documents were appended) is continued rather than recomputed."""
    counts = np.asarray(doc_num_chunks, np.int64)
    start = previous if previous is not None else Assignment.empty(num_shards)
    assign = start.extend(counts[len(start.shard):])
    return ShardPlan.build(assign, doc_chunk_offset)
