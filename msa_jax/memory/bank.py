"""The memory bank: routing tier, content tier and document metadata (docs/msa.md §3-§4).

Per router layer r and pooled chunk c the bank holds K̄r[r, c] (the routing tier, scanned on the
accelerator for every question) and K̄[r, c], V̄[r, c] (the content tier, read only for the
selected documents; it may live in host memory). A document owns a contiguous run of chunk slots.

The tiers are float32, bfloat16 (or float16/float64: `BankSpec.dtype`), and the routing tier may
instead be int8 (`BankSpec.routing_dtype`), stored with one float32 scale per chunk, router layer
and KV head (`routing_scale` [C, R, K]; msa_jax.memory.quantize) and dequantised tile by tile by
the routing scan. Host arrays are the source of truth, stored chunk-major [C, R, K, H] (one chunk's rows of every
router layer together, so that appending chunks appends to a file: msa_jax.memory.store); a bank
read by `load_bank` keeps them memory-mapped from its files (copy-on-write: nothing is copied into
RAM until it is changed). Fresh banks hold them in RAM with spare capacity, grown in place where
NumPy can (`host_arrays.grow_rows`: no copy, so building peaks at about the final size), so adding
documents is amortised O(new). Token ids and texts are flat columns (msa_jax.memory.columns).
`view()` gives the device arrays stage 2 reads, padded to geometric capacities so that adding a
few documents does not recompile. Deleting a document is a metadata operation: its slot is
tombstoned (its chunks never score and are never selected; their values stay); trailing
tombstones are trimmed and `compact()` removes the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernels_pallas.common import geometric_size  # at most 12.5 % padding
from kernels_pallas.routing.reference import EPS as ROUTING_EPS  # cosine's norm floor
from msa_jax.errors import BankError
from msa_jax.memory.columns import TextColumn, TokenColumn
from msa_jax.memory.host_arrays import aligned_empty, grow_rows, release_pages
from msa_jax.memory.quantize import quantize_int8
from msa_jax.memory.unit_keys import unit_rows, unit_scales
from msa_jax.model.query import MemoryView
from msa_jax.utils import progress

TIERS = ("routing_keys", "content_k", "content_v")
SCALE = "routing_scale"  # [C, R, K] float32: the scales of an int8 routing tier
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")  # the tiers' dtypes
ROUTING_DTYPES = FLOAT_DTYPES + ("int8",)
VIEW_PROGRESS_BYTES = 1 << 30  # view() shows a progress bar (stderr) from this many tier bytes


@dataclasses.dataclass(frozen=True)
class BankSpec:
    """Shapes and identity of a bank: what a model must match to use it."""

    fingerprint: str  # of the model that encoded it (msa_jax.memory.fingerprint)
    num_router_layers: int  # R
    num_kv_heads: int  # K
    head_dim: int  # H
    pooling_size: int  # P
    dtype: str  # of the content tier, and of the routing tier unless routing_dtype says otherwise
    routing_dtype: str = ""  # of the routing tier: "" (= dtype), a float dtype or "int8"

    def __post_init__(self):
        if self.dtype not in FLOAT_DTYPES:
            hint = " (int8 is for the routing tier only: routing_dtype='int8')" \
                if self.dtype == "int8" else ""
            raise BankError(f"memory bank tier dtype {self.dtype!r} is not one of "
                            f"{', '.join(FLOAT_DTYPES)}{hint}")
        if self.routing_dtype not in ("",) + ROUTING_DTYPES:
            raise BankError(f"memory bank routing_dtype {self.routing_dtype!r} is not one of "
                            f"{', '.join(ROUTING_DTYPES)}")
        if self.routing_dtype == self.dtype:
            object.__setattr__(self, "routing_dtype", "")  # one spelling per bank layout

    @property
    def routing(self) -> str:
        """The routing tier's dtype."""
        return self.routing_dtype or self.dtype

    @property
    def quantized(self) -> bool:
        """An int8 routing tier (with `routing_scale`)."""
        return self.routing == "int8"

    @property
    def arrays(self) -> tuple[str, ...]:
        """The chunk-major arrays a bank of this spec stores: the tiers (and the int8 scales)."""
        return TIERS + ((SCALE,) if self.quantized else ())

    def row_format(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """(dtype, shape of one chunk's row) of a stored array: [R, K, H], scales [R, K]."""
        r, k, h = self.num_router_layers, self.num_kv_heads, self.head_dim
        if name == SCALE:
            return np.dtype(np.float32), (r, k)
        dtype = self.routing if name == "routing_keys" else self.dtype
        return np.dtype(jnp.dtype(dtype)), (r, k, h)

    def empty_rows(self, name: str, n: int) -> np.ndarray:
        dtype, shape = self.row_format(name)
        return np.zeros((n,) + shape, dtype)

    def chunk_shape(self, n: int) -> tuple[int, ...]:
        return (self.num_router_layers, n, self.num_kv_heads, self.head_dim)

    def rows_shape(self, n: int) -> tuple[int, ...]:
        """Chunk-major storage of n chunks: [n, R, K, H]."""
        return (n, self.num_router_layers, self.num_kv_heads, self.head_dim)

    @property
    def narrow_routing(self) -> bool:
        """A float routing tier narrower than float32 (bfloat16): it cannot hold unit vectors
        exactly, so a unit-key view upcasts it (`view`, on CPU) or leaves it to be normalised
        per question."""
        return not self.quantized and np.dtype(self.row_format("routing_keys")[0]).itemsize < 4

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(jnp.dtype(self.dtype))


class DocumentSlots:
    """Document-slot bookkeeping shared by banks: `doc_ids[slot]` is None for a deleted slot;
    `_slot` maps every live id to its slot (kept in step with `doc_ids` by the bank's add and
    delete, rebuilt by `_index_ids` when `doc_ids` is replaced), so looking a document up and
    counting documents cost O(1), not a pass over the bank."""

    doc_ids: list[str | None]
    _slot: dict[str, int]

    def _index_ids(self):
        self._slot = {d: i for i, d in enumerate(self.doc_ids) if d is not None}

    @property
    def num_slots(self) -> int:
        """Document slots, deleted ones included (the M axis of scores)."""
        return len(self.doc_ids)

    @property
    def num_docs(self) -> int:
        return len(self._slot)

    def slot_of(self, doc_id: str) -> int:
        slot = self._slot.get(str(doc_id))
        if slot is None:
            raise BankError(f"document {doc_id!r} is not in the bank")
        return slot

    def live_slots(self) -> list[int]:
        return [i for i, d in enumerate(self.doc_ids) if d is not None]


class MemoryBank(DocumentSlots):
    """Documents encoded into pooled chunks; see the module docstring."""

    def __init__(self, spec: BankSpec, prefix_k: np.ndarray, prefix_v: np.ndarray):
        self.spec = spec
        self.prefix_k = np.asarray(prefix_k)  # [L, Pf, K, H]
        self.prefix_v = np.asarray(prefix_v)
        self._tiers = {n: spec.empty_rows(n, 0) for n in spec.arrays}
        self._chunk_doc = np.zeros(0, np.int32)
        self._num_chunks = 0
        self.doc_chunk_offset: list[int] = []
        self.doc_num_chunks: list[int] = []
        self.doc_ids: list[str | None] = []  # None: deleted slot
        self._slot: dict[str, int] = {}
        self.doc_tokens = TokenColumn()  # slot -> tuple of token ids | None
        self.doc_texts = TextColumn()  # slot -> str | None
        self._view_cache: dict = {}
        self._pending: dict = {}  # tier -> check to run before its first read (lazy checksums)
        self.origin = None  # the saved bank whose prefix this is (msa_jax.memory.store)

    @classmethod
    def restore(cls, spec: BankSpec, prefix_k, prefix_v, tiers: dict, counts, offsets, ids,
                tokens: TokenColumn, texts: TextColumn, pending: dict) -> "MemoryBank":
        """A bank over stored columns (`load_bank`): tiers [C, R, K, H] used as given (memory
        maps), `counts` 0 and `ids` None for deleted slots; `pending[tier]()` runs before the
        tier is first read."""
        bank = cls(spec, prefix_k, prefix_v)
        bank._tiers = dict(tiers)
        bank._num_chunks = len(tiers["routing_keys"])
        bank.doc_num_chunks = np.asarray(counts, np.int64).tolist()
        bank.doc_chunk_offset = np.asarray(offsets, np.int64).tolist()
        bank.doc_ids, bank.doc_tokens, bank.doc_texts = list(ids), tokens, texts
        bank._index_ids()
        counts, offsets = np.asarray(counts, np.int64), np.asarray(offsets, np.int64)
        first = np.repeat(offsets - (np.cumsum(counts) - counts), counts)  # [live chunks]
        chunk_doc = np.full(bank._num_chunks, -1, np.int32)
        chunk_doc[first + np.arange(len(first))] = np.repeat(np.arange(len(counts)), counts)
        bank._chunk_doc = chunk_doc
        bank._pending = dict(pending)
        return bank

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def num_chunks(self) -> int:
        """Chunk slots in use (tombstoned ones included)."""
        return self._num_chunks

    @property
    def num_tokens(self) -> int:
        return self.doc_tokens.live_total()

    def rows(self, name: str) -> np.ndarray:
        """routing_keys | content_k | content_v as stored, [num_chunks, R, K, H] (no copy), or
        routing_scale [num_chunks, R, K]; a loaded bank checks the array's checksums on this
        first read."""
        check = self._pending.pop(name, None)
        if check is not None:
            check()
        return self._tiers[name][:self._num_chunks]

    def tier(self, name: str) -> np.ndarray:
        """routing_keys | content_k | content_v, [R, num_chunks, K, H] (a view, no copy);
        routing_scale [R, num_chunks, K]."""
        return np.moveaxis(self.rows(name), 0, 1)

    @property
    def chunk_doc(self) -> np.ndarray:
        return self._chunk_doc[:self._num_chunks]

    def tier_bytes(self) -> dict[str, int]:
        per = {n: self._tiers[n][:self._num_chunks].nbytes for n in self.spec.arrays}
        return {"routing": per["routing_keys"] + per.get(SCALE, 0),
                "content": per["content_k"] + per["content_v"]}

    # -- documents -------------------------------------------------------------------------------
    def _reserve(self, n_chunks: int):
        need = self._num_chunks + n_chunks
        have = self._chunk_doc.shape[0]
        if need <= have:
            return
        # in place (no copy) the spare rows are what costs: resident, as NumPy zeroes them, so
        # they stay within 1/64 (0.15 GiB at 100M tiny-msa tokens); a copy leaves 1/8
        cap = geometric_size(need, 256, steps_per_octave=64)
        copy_cap = geometric_size(need, 256)
        for name in self.spec.arrays:
            self.rows(name)  # a pending check runs before the tier is copied or grown
            grow_rows(self._tiers, name, cap, copy_rows=copy_cap)  # no 2x peak
        chunk_doc = {"doc": self._chunk_doc}
        self._chunk_doc = None  # the dict's reference is the only one: grown in place
        try:
            grow_rows(chunk_doc, "doc", min(t.shape[0] for t in self._tiers.values()), fill=-1)
        finally:  # grown or, on an error, as it was
            self._chunk_doc = chunk_doc["doc"]

    def append(self, ids: Sequence[str], tokens: Sequence[Sequence[int]],
               texts: Sequence[str | None], num_chunks: Sequence[int], routing_keys: np.ndarray,
               content_k: np.ndarray, content_v: np.ndarray):
        """Append encoded documents: their pooled chunks [R, sum(num_chunks), K, H] (float), in
        order; an int8 routing tier quantises routing_keys here."""
        total = int(sum(num_chunks))
        for name, arr in (("routing_keys", routing_keys), ("content_k", content_k),
                          ("content_v", content_v)):
            if arr.shape != self.spec.chunk_shape(total):
                raise BankError(f"{name} has shape {arr.shape}, expected "
                                   f"{self.spec.chunk_shape(total)}")
        rows = {n: np.moveaxis(a, 1, 0) for n, a in zip(TIERS, (routing_keys, content_k,
                                                               content_v))}  # [n, R, K, H]
        if self.spec.quantized:
            rows["routing_keys"], rows[SCALE] = quantize_int8(rows["routing_keys"])
        self._append_rows(ids, tokens, texts, num_chunks, rows)

    def _append_rows(self, ids: Sequence[str], tokens: Sequence[Sequence[int]],
                     texts: Sequence[str | None], num_chunks: Sequence[int], rows: dict):
        """Append documents whose chunks are stored rows already (`rows[name]` [n, ...] for each
        of spec.arrays)."""
        new: set[str] = set()
        for i in map(str, ids):
            if i in self._slot or i in new:
                raise BankError(f"document id {i!r} is already in the bank")
            new.add(i)
        total = int(sum(num_chunks))
        self._reserve(total)
        at = self._num_chunks
        for name in self.spec.arrays:
            self.rows(name)  # a pending check runs before the tier is written
            self._tiers[name][at:at + total] = rows[name]
        for doc_id, toks, text, n in zip(ids, tokens, texts, num_chunks):
            slot = len(self.doc_ids)
            self._chunk_doc[at:at + n] = slot
            self.doc_chunk_offset.append(at)
            self.doc_num_chunks.append(int(n))
            self.doc_ids.append(str(doc_id))
            self._slot[str(doc_id)] = slot
            self.doc_tokens.append(toks)
            self.doc_texts.append(text)
            at += n
        self._num_chunks = at
        self._view_cache.clear()

    def delete(self, doc_ids: Iterable[str]):
        """Remove documents (metadata only: their chunks stay, unreachable); nothing else is
        re-encoded."""
        slots = list(dict.fromkeys(self.slot_of(d) for d in doc_ids))  # each slot once
        for s in slots:
            off, n = self.doc_chunk_offset[s], self.doc_num_chunks[s]
            self._chunk_doc[off:off + n] = -1
            del self._slot[self.doc_ids[s]]
            self.doc_ids[s] = self.doc_tokens[s] = self.doc_texts[s] = None
            self.doc_num_chunks[s] = 0
        while self.doc_ids and self.doc_ids[-1] is None:  # trim trailing tombstones
            self._num_chunks = self.doc_chunk_offset.pop()
            for lst in (self.doc_num_chunks, self.doc_ids, self.doc_tokens, self.doc_texts):
                lst.pop()
        self._view_cache.clear()

    def compact(self):
        """Drop tombstoned slots (renumbers slots; document ids are unchanged)."""
        keep = self.live_slots()
        chunks = np.concatenate([np.arange(self.doc_chunk_offset[s],
                                           self.doc_chunk_offset[s] + self.doc_num_chunks[s])
                                 for s in keep]) if keep else np.zeros(0, np.int64)
        rows = {n: self.rows(n)[chunks] for n in self.spec.arrays}  # stored values: no requantising
        ids = [self.doc_ids[s] for s in keep]
        toks = [self.doc_tokens.array(s) for s in keep]
        texts = [self.doc_texts[s] for s in keep]
        counts = [self.doc_num_chunks[s] for s in keep]
        fresh = MemoryBank(self.spec, self.prefix_k, self.prefix_v)
        fresh._append_rows(ids, toks, texts, counts, rows)
        self.__dict__.update(fresh.__dict__)

    # -- device view -----------------------------------------------------------------------------
    def view(self, put=None, unit_keys: bool = False) -> MemoryView:
        """The arrays stage 2 reads, padded to power-of-two capacities, on device. On the CPU
        backend the padded tiers are the device arrays (aligned host arrays that device_put
        aliases), and a loaded bank's mapped tier pages are released once copied, so the view
        costs about one copy of the tiers in RAM (msa_jax.memory.host_arrays).

        `put(name, array)` places each array (default: `jax.device_put` on the default device);
        memory-parallel placement (msa_jax.memory.parallel) passes its own.
        `unit_keys`: score the routing keys as unit vectors (cosine routing,
        `cfg.msa.inference_cosine`): pass it for a cosine-routing model. A float32 (or
        float64) tier's keys are then normalised once here, an int8 tier gets the scales that
        make each dequantised head a unit vector (memory/unit_keys.py), and the scan skips
        normalising every key per question (~10x less scan time on XLA:CPU); the scores are the
        same up to float rounding. A bfloat16 tier cannot hold unit vectors exactly (its
        rounding moves a norm by up to ~0.4 %): on the CPU backend its view is float32 unit
        keys (twice its bytes; XLA:CPU also scans bfloat16 ~8x slower than float32), elsewhere
        it is left as it is and normalised per question.
        """
        narrow = self.spec.narrow_routing
        upcast = unit_keys and narrow and jax.default_backend() == "cpu"
        unit = unit_keys and (not narrow or upcast)
        key = (id(put), unit)
        if key in self._view_cache:
            return self._view_cache[key]
        put = put or (lambda name, x: jax.device_put(x))
        c_cap = geometric_size(self._num_chunks, 1024)
        m_cap = geometric_size(self.num_slots, 64)
        tiers, n = {}, self._num_chunks
        total = sum(self.tier_bytes().values())
        bar = progress(total=total, enabled=total >= VIEW_PROGRESS_BYTES, unit="B",
                       unit_scale=True, desc="memory view", leave=False)
        for name in self.spec.arrays:  # one array per router layer: no slicing [R, C, ...] in jit
            per_layer = []
            dtype, shape = self.spec.row_format(name)
            for r in range(self.spec.num_router_layers):
                # [C, K, H], or scales [C, K]; aligned, so that a CPU device_put aliases it
                arr = aligned_empty((c_cap,) + shape[1:], np.float32 if upcast and
                                    name == "routing_keys" else dtype)
                if unit and name == SCALE:  # int8: scales that make the heads unit vectors
                    unit_scales(self.rows("routing_keys")[:, r], self.rows(name)[:, r], arr[:n],
                                ROUTING_EPS)
                elif unit and name == "routing_keys" and not self.spec.quantized:
                    unit_rows(self.rows(name)[:, r], arr[:n], ROUTING_EPS)
                else:
                    arr[:n] = self.rows(name)[:, r]
                arr[n:] = 0
                per_layer.append(put(name, arr))
                bar.update(arr[:n].nbytes)
            tiers[name] = tuple(per_layer)
            release_pages(self.rows(name))  # a mapped file's pages: copied, now reclaimable
        bar.close()
        chunk_doc = np.full(c_cap, -1, np.int32)
        chunk_doc[:self._num_chunks] = self.chunk_doc
        offset = np.zeros(m_cap, np.int32)
        offset[:self.num_slots] = self.doc_chunk_offset
        count = np.zeros(m_cap, np.int32)
        count[:self.num_slots] = self.doc_num_chunks
        longest = max(self.doc_num_chunks, default=1)
        view = MemoryView(tiers["routing_keys"], tiers["content_k"], tiers["content_v"],
                          put("chunk_doc", chunk_doc), put("doc_chunk_offset", offset),
                          put("doc_num_chunks", count), tiers.get(SCALE),
                          max_doc_chunks=geometric_size(longest, 1), unit_keys=unit)
        self._view_cache[key] = view
        return view

    def __repr__(self):
        return (f"MemoryBank({self.num_docs} documents, {self.num_tokens} tokens, "
                f"{self.num_chunks} chunks x {self.spec.num_router_layers} router layers, "
                f"{self.spec.dtype}" + (f", routing {self.spec.routing_dtype}"
                                        if self.spec.routing_dtype else "") + ")")
