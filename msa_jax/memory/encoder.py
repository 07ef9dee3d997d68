"""Stage-1 encoding of a corpus into a memory bank, streamed block by block and resumable.

Peak memory is bounded by the block size (one block computing on each device while the previous
one is appended, so the host work overlaps the compute), not by the corpus. With a
`journal` directory every finished block is committed atomically to disk; an interrupted encoding
resumes from the last committed block and loses nothing but the block that was in flight. A
journal belongs to one model (its fingerprint), corpus and block size, and is locked while an
encoding uses it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Callable, Sequence

import jax
import numpy as np

from kernels_pallas.common import next_pow2, resolve_implementation
from msa_jax.config import ModelConfig
from msa_jax.data.tokenizer import check_positions, check_token_ids
from msa_jax.errors import parse_json
from msa_jax.memory.bank import BankError, BankSpec, MemoryBank
from msa_jax.locks import hold
from msa_jax.memory.fingerprint import mismatch, model_fingerprint
from msa_jax.memory.layout import (Block, auto_block_tokens, make_block, max_block_chunks,
                                   plan_blocks)
from msa_jax.model.encode import encode_block, encode_prefix
from msa_jax.utils import atomic_write_bytes, progress


@dataclasses.dataclass(frozen=True)
class DocInput:
    """A document to encode: its id, token ids, and the text re-injected by Memory Interleave."""

    id: str
    tokens: tuple[int, ...]
    text: str | None = None


def new_bank(cfg: ModelConfig, params, dtype: str | None = None,
             routing_dtype: str | None = None) -> MemoryBank:
    """An empty bank for this model (the prefix K/V encoded once). dtype: of the tiers (default:
    the model's compute dtype); routing_dtype: of the routing tier if not dtype (a float dtype, or
    "int8": quantised per chunk, router layer and KV head, msa_jax.memory.quantize)."""
    if not cfg.is_msa:
        raise BankError("this model has no MSA config (router layers): it cannot encode memory")
    spec = BankSpec(model_fingerprint(cfg, params), len(cfg.msa.router_layers),
                    cfg.num_kv_heads, cfg.head_dim, cfg.msa.pooling_size, dtype or cfg.dtype,
                    routing_dtype or "")
    pk, pv = encode_prefix(cfg, params)
    return MemoryBank(spec, np.asarray(pk), np.asarray(pv))


def _validate(cfg: ModelConfig, docs: Sequence[DocInput]):
    """Non-empty, unique ids, every token id in the vocabulary (an id outside it makes a NaN
    bank, also for the other documents of its block) and no document longer than the model's
    positions (document-wise positions restart at 0 per document)."""
    if not docs:
        raise BankError("no documents to encode (empty corpus)")
    seen: dict[str, int] = {}
    for i, d in enumerate(docs):
        if not d.tokens:
            raise BankError(f"document {d.id!r} (#{i}) is empty")
        what = f"document {d.id!r} (#{i}, {len(d.tokens):,} tokens)"
        check_positions(len(d.tokens), cfg.max_position_embeddings, what,
                        "split it into several documents")
        check_token_ids(d.tokens, cfg.vocab_size, f"document {d.id!r} (#{i})")
        if d.id in seen:
            raise BankError(f"document id {d.id!r} appears twice (#{seen[d.id]} and #{i})")
        seen[d.id] = i


def _plan_key(spec: BankSpec, docs: Sequence[DocInput], block_tokens: int) -> str:
    h = hashlib.sha256(f"{spec.fingerprint}|{spec.dtype}|{block_tokens}".encode())
    if spec.routing_dtype:  # (absent from the keys of journals written before routing_dtype)
        h.update(f"routing {spec.routing_dtype}".encode())
    for d in docs:
        h.update(f"{d.id}:{len(d.tokens)};".encode())
        h.update(np.asarray(d.tokens, np.int64).tobytes())
    return h.hexdigest()


class _Journal:
    """block_{i}.npz files in a directory, each committed atomically; plan.json guards reuse:
    it records the encoding's key and the fingerprint of the model that wrote the blocks."""

    def __init__(self, directory: str | None, key: str, fingerprint: str):
        self.dir = directory
        if directory is None:
            return
        os.makedirs(directory, exist_ok=True)
        plan = os.path.join(directory, "plan.json")
        if os.path.exists(plan):
            old = self._read_plan(plan)
            theirs = old.get("fingerprint", "")
            if theirs != fingerprint:
                raise BankError(mismatch(f"journal {directory}", theirs or "unknown", fingerprint,
                                         "its blocks cannot be resumed with this model; remove "
                                         "the journal folder or pass another one"))
            if old["key"] != key:
                raise BankError(f"journal {directory} belongs to another encoding (different "
                                f"corpus or block size); remove it or use another")
        else:
            atomic_write_bytes(plan, json.dumps({"key": key,
                                                 "fingerprint": fingerprint}).encode())

    def _read_plan(self, plan: str) -> dict:
        recover = f"delete the journal folder {self.dir} to encode from the start"
        with open(plan, "rb") as f:
            raw = f.read()
        try:
            value = parse_json(raw, plan, BankError)
        except BankError as e:
            raise BankError(f"{e}; {recover}") from None
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise BankError(f"{plan}: not a journal plan (expected {{\"key\": ...}}); {recover}")
        return value

    def _path(self, i: int) -> str:
        return os.path.join(self.dir, f"block_{i:06d}.npz")

    def load(self, i: int, shape: tuple[int, ...]):
        """Block i's tiers, each of `shape` [R, n, K, H], or None if it was not committed."""
        if self.dir is None or not os.path.exists(self._path(i)):
            return None
        path = self._path(i)
        recover = f"delete {path} to encode that block again (or the folder {self.dir})"
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise BankError(f"journal block {i} ({path}) is truncated or corrupt "
                            f"({type(e).__name__}: {e}); {recover}") from None
        for name in _TIERS:
            got = arrays[name].shape if name in arrays else None
            if got != shape:
                raise BankError(f"journal block {i} ({path}): {name} has shape {got}, this "
                                f"encoding expects {shape}; {recover}")
        return arrays

    def commit(self, i: int, arrays: dict):
        if self.dir is not None:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(self._path(i), buf.getvalue())


_TIERS = ("routing_keys", "content_k", "content_v")  # the arrays of one encoded block


def _block_target(cfg: ModelConfig) -> int:
    """Tokens per block: large where the Pallas kernel skips key blocks of other documents;
    small on the XLA path (measured fastest here at 512, banded or not)."""
    return 4096 if resolve_implementation(cfg.kernel_implementation) == "pallas" else 512


def _length_multiple(cfg: ModelConfig, block_tokens: int) -> int | None:
    """On the XLA path a block is padded only to a multiple of a quarter block (at least 128
    tokens), not to the full block: packed in order, 200-500-token documents fill 512-token
    blocks to ~72 %, and the padding costs as much as real tokens there. The Pallas kernels
    skip padded key blocks themselves: their blocks keep one shape."""
    if resolve_implementation(cfg.kernel_implementation) == "pallas":
        return None
    quarter = block_tokens // 4
    return quarter if quarter >= 128 and block_tokens % 4 == 0 else None


def _band(lengths: Sequence[int]) -> int:
    """The attention band of a corpus: a power of two above its longest document."""
    return next_pow2(max(lengths, default=1) + 1)


def _block_dtypes(spec: BankSpec) -> dict[str, np.dtype]:
    """The dtype each tier of an encoded block is kept in (and journaled): the tier's own, float32
    for an int8 routing tier (quantised when the bank appends the block)."""
    out = {name: spec.row_format(name)[0] for name in _TIERS}
    if spec.quantized:
        out["routing_keys"] = np.dtype(np.float32)
    return out


def encode_devices(params, devices=None) -> list:
    """The devices stage-1 blocks are spread over (one whole block per device, round-robin).

    devices: None - [None], JAX's own placement (where the params are); "local" - every local
    device of JAX's default backend, when the params sit on one device (sharded params keep
    JAX's placement); or a sequence of devices. XLA:CPU runs a small block on about one core:
    several CPU devices (`jax_num_cpu_devices`, which `msa-jax encode` sets to the cores) put
    the others to work. Each device compiles the encoder once."""
    if devices is None:
        return [None]
    if isinstance(devices, str):
        if devices != "local":
            raise BankError(f"devices={devices!r}: expected None, 'local' or a list of devices")
        leaves = jax.tree_util.tree_leaves(params)
        if any(isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 for x in leaves):
            return [None]
        local = jax.local_devices()
        return local if len(local) > 1 else [None]
    devices = list(devices)
    if not devices:
        raise BankError("devices is empty: give at least one device to encode on")
    return devices


def _dispatch(cfg: ModelConfig, params, block: Block, num_chunks: int,
              band: int | None = None, device=None):
    """Start encoding one block (asynchronously: JAX returns before the block is computed), so
    that the host work of the previous blocks overlaps this one's compute. `params` already on
    `device` (None: JAX's placement). PooledChunks, each tier [R, num_chunks, K, H] there."""
    arrays = [np.asarray(x)[None] for x in (block.tokens, block.positions, block.segment_ids,
                                             block.chunk_ids)]  # [L] -> [1, L]
    if device is not None:
        arrays = jax.device_put(arrays, device)
    pooled, _ = encode_block(cfg, params, *arrays, num_chunks, band=band)
    return pooled


def _finish(pooled, block: Block, dtypes: dict) -> dict:
    """A dispatched block's tiers on the host, its own chunks only: [R, n, K, H] each (sliced in
    NumPy after the transfer: an eager slice of the device array costs a dispatch per tier)."""
    n = block.num_chunks
    return {name: np.asarray(getattr(pooled, name))[:, :n].astype(dtypes[name])
            for name in _TIERS}


def encode_documents(cfg: ModelConfig, params, docs: Sequence[DocInput], *,
                     bank: MemoryBank | None = None, block_tokens: int | None = None,
                     journal: str | None = None, show_progress: bool = True,
                     dtype: str | None = None, routing_dtype: str | None = None,
                     on_block: Callable[[MemoryBank], object] | None = None,
                     devices=None) -> MemoryBank:
    """Encode `docs` and append them to `bank` (a new bank if None). Returns the bank.

    block_tokens: tokens per stage-1 block (default: 4096 with the Pallas kernels, 512 on the XLA
    path, or the longest document rounded up to a power of two). A document longer than an
    explicit block_tokens is an error. Documents shorter than half a block are attended banded
    (O(block·band), the band a power of two above the longest document; the same result). On
    the XLA path a block is padded only up to a multiple of a quarter block (`_length_multiple`).
    on_block(bank): called after each block is appended (memory parallel writes the new chunks
    into its sharded tiers there).
    dtype, routing_dtype: of a new bank's tiers (new_bank); an existing bank keeps its own.
    devices: where blocks are encoded, one whole block per device in turn (`encode_devices`:
    None, "local" or a list). Blocks are appended in corpus order whatever the device, so the
    bank does not depend on how many there are.
    """
    _validate(cfg, docs)
    bank = bank or new_bank(cfg, params, dtype, routing_dtype)
    fingerprint = model_fingerprint(cfg, params)
    if bank.spec.fingerprint != fingerprint:
        raise BankError(mismatch("this bank", bank.spec.fingerprint, fingerprint,
                                 "appending would mix two models' chunks; encode into a new "
                                 "bank"))
    with hold(journal) if journal else contextlib.nullcontext():  # one encoding per journal
        return _encode_all(cfg, params, docs, bank, block_tokens, journal, show_progress,
                           on_block, encode_devices(params, devices))


def _encode_all(cfg: ModelConfig, params, docs: Sequence[DocInput], bank: MemoryBank,
                block_tokens: int | None, journal: str | None, show_progress: bool,
                on_block, devices: list) -> MemoryBank:
    pool = cfg.msa.pooling_size
    lengths = [len(d.tokens) for d in docs]
    band = _band(lengths)
    block_tokens = block_tokens or auto_block_tokens(lengths, pool, _block_target(cfg))
    # banded attention within a block: 1.46x the tokens/s of dense for 512-token blocks of
    # ~60-token documents on the 2-core CPU (12.5K vs 8.6K, random 4-layer D-128 model)
    band = band if 2 * band <= block_tokens else None
    plan = plan_blocks(lengths, block_tokens)
    num_chunks = max_block_chunks(lengths, plan, pool)
    dtypes = _block_dtypes(bank.spec)
    multiple = _length_multiple(cfg, block_tokens)
    log = _Journal(journal, _plan_key(bank.spec, docs, block_tokens), bank.spec.fingerprint)
    bar = progress(total=sum(lengths), unit="tok", unit_scale=True, desc="encode memory",
                   enabled=show_progress)

    def append(i: int, part: Sequence[DocInput], block: Block, arrays):
        if not isinstance(arrays, dict):  # dispatched: wait for it, then journal it
            arrays = _finish(arrays, block, dtypes)
            log.commit(i, arrays)
        bank.append([d.id for d in part], [d.tokens for d in part], [d.text for d in part],
                    block.doc_num_chunks, arrays["routing_keys"], arrays["content_k"],
                    arrays["content_v"])
        if on_block is not None:
            on_block(bank)
        bar.update(block.num_tokens)

    replicas = [params if d is None else jax.device_put(params, d) for d in devices]
    in_flight: collections.deque = collections.deque()  # (i, documents, block, arrays)
    for i, (first, n) in enumerate(plan):
        part = docs[first:first + n]
        block = make_block([d.tokens for d in part], first, block_tokens, pool, multiple)
        arrays = log.load(i, bank.spec.chunk_shape(block.num_chunks))
        if arrays is None:
            d = i % len(devices)
            arrays = _dispatch(cfg, replicas[d], block, num_chunks, band, devices[d])
        if len(in_flight) == len(devices):
            append(*in_flight.popleft())  # in order, while the later blocks compute
        in_flight.append((i, part, block, arrays))
    while in_flight:
        append(*in_flight.popleft())
    bar.close()
    return bank
