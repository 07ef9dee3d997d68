"""Saving and loading memory banks: format 2, files used in place.

Layout of a bank folder, format 3 (data files: raw rows, see msa_jax.memory.bank_files):
    manifest.json          format version, generation, spec, prefix shape and dtype, the valid
                           length (rows) of every data file, the sha256 of each segment of rows,
                           and the name of the deleted-flags file; replaced atomically
    routing_keys.bin, content_k.bin, content_v.bin
                           the tiers, chunk-major [C, R, K, H] of the spec's dtypes (the
                           routing tier: `routing_dtype`, else `dtype`)
    routing_scale.bin      float32 [C, R, K]: the scales of an int8 routing tier (only then)
    doc_chunk_offset.bin, doc_num_chunks.bin
                           int64 [M]: each document slot's first chunk and chunk count
    token_count.bin, tokens.bin     int64 [M] and the flat int32 token ids
    id_bytes.bin, ids.bin           int64 [M] and the flat utf-8 ids
    text_bytes.bin, texts.bin       int64 [M] (-1: no text) and the flat utf-8 texts
    deleted-<generation>.bin        uint8 [M]: 1 for a deleted slot
    prefix_k.npy, prefix_v.npy      the prefix K/V [L, Pf, K, H]

Loading maps the files (nothing is copied into RAM) after checking the manifest, every file's
size against it and the metadata's structure; checksums are checked by segment: the per-slot
files and ids at load, each tier on its first read (`MemoryBank.rows`: the device view, a
copy, a save), tokens and texts segment by segment on the first read of one of their slots.
So a truncated, swapped or altered file is refused before it can change an answer. Cost, measured
by benchmarks/memory/checksum_cost.py on this 2-core machine (file in the page cache): load_bank
of a bank with a 1.07 GB routing tier takes 8 ms; the tier's first read then takes 0.89 s
(sha256 at 1.2 GB/s, 0.83 s per GB, against 0.17 s for a plain read). At 100M tokens of the
tiny-msa preset (9.6 GB of tiers) that is about 8 s, paid when the device view is first built
(which reads every tier anyway), not at load; `checksums=False` skips it.

Writing, under the destination's lock (msa_jax.locks):
  - a bank saved to the folder it was loaded from or last saved to (`bank.origin`, same
    generation on disk) is appended to: only the new chunks and metadata rows are written (after
    the valid lengths), the deleted flags go to a new small file, and the manifest, replaced
    atomically, makes them valid; deleting is a metadata operation;
  - otherwise the bank's live documents are written to a new folder that replaces the old one
    atomically (msa_jax.atomic); deleted slots are dropped.
A kill at any moment leaves the previous bank readable: its manifest only names rows that no
writer touches. Format-1 banks are refused with a message; `convert_bank` converts them.
Format 2 (before tier precision: no `routing_dtype` in the spec, no routing_scale.bin) is read
as a bank whose routing tier has the content tier's dtype; writing it anew makes it format 3
(appending to it in place keeps its files and writes a format-3 manifest).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import uuid

import numpy as np

from msa_jax.atomic import _pause_at_swap, atomic_directory, claim, recover_for_reading
from msa_jax.memory import bank_files as bf
from msa_jax.memory.bank import TIERS, BankError, BankSpec, MemoryBank
from msa_jax.memory.columns import TextColumn, TokenColumn
from msa_jax.memory.store_v1 import _check_fields, _read_json, _sha256
from msa_jax.utils import atomic_write_bytes

FORMAT_VERSION = 3
READS = (2, 3)  # format 2: no routing_dtype (= dtype), no int8 tier
_ARRAYS = TIERS
MANIFEST = "manifest.json"
_FIELDS = frozenset({"format_version", "generation", "spec", "prefix", "lengths", "segments",
                     "deleted"})
_PREFIX = ("prefix_k", "prefix_v")


# -- writing ---------------------------------------------------------------------------------
def save_bank(bank: MemoryBank, path: str, overwrite: bool = False) -> str:
    """Write the bank to `path` (see the module docstring: appended in place when `path` holds
    this bank's saved prefix, else written anew atomically). Returns the absolute path."""
    with claim(path, overwrite) as path:  # a locked or unwritable path fails before the copy
        manifest = _appendable(bank, path)
        if manifest is not None:
            _append(bank, path, manifest)
        else:
            with atomic_directory(path, overwrite=overwrite) as tmp:
                gen, kept = _write_new(bank, tmp)
            bank.origin = _origin(path, gen, bank) if kept else None
    return path


def _origin(path: str, generation: str, bank: MemoryBank) -> dict:
    return {"path": path, "generation": generation, "slots": bank.num_slots,
            "chunks": bank.num_chunks}


def _appendable(bank: MemoryBank, path: str) -> dict | None:
    """The manifest at `path` if the bank extends exactly what it holds, else None."""
    origin = bank.origin
    if not origin or origin["path"] != path or not os.path.isfile(os.path.join(path, MANIFEST)):
        return None
    try:
        manifest = _read_manifest(path)
    except BankError:
        return None  # damaged: replaced by a complete write
    if manifest["generation"] != origin["generation"]:
        return None
    return manifest if (bank.num_slots >= origin["slots"]
                        and bank.num_chunks >= origin["chunks"]) else None


def _slot_rows(bank: MemoryBank, slots, offsets, w: bf.SegmentWriter):
    """Per-slot and flat rows of `slots`, their first chunks being `offsets`."""
    counts, tokens, ids, texts = [], [], [], []
    for s in slots:
        counts.append(bank.doc_num_chunks[s])
        tokens.append(bank.doc_tokens.array(s))
        ids.append((bank.doc_ids[s] or "").encode("utf-8"))
        text = bank.doc_texts[s]
        texts.append(None if text is None else text.encode("utf-8"))
    w.add("doc_chunk_offset", np.asarray(offsets, np.int64))
    w.add("doc_num_chunks", np.asarray(counts, np.int64))
    w.add("token_count", np.asarray([len(t) for t in tokens], np.int64))
    w.add("tokens", np.concatenate(tokens) if tokens else np.zeros(0, np.int32))
    w.add("id_bytes", np.asarray([len(i) for i in ids], np.int64))
    w.add("ids", np.frombuffer(b"".join(ids), np.uint8))
    w.add("text_bytes", np.asarray([-1 if t is None else len(t) for t in texts], np.int64))
    w.add("texts", np.frombuffer(b"".join(t or b"" for t in texts), np.uint8))


def _chunk_runs(bank: MemoryBank, slots) -> list[tuple[int, int]]:
    """[first, end) chunk ranges of `slots`, adjacent ones merged."""
    runs: list[list[int]] = []
    for s in slots:
        a, n = bank.doc_chunk_offset[s], bank.doc_num_chunks[s]
        if runs and runs[-1][1] == a:
            runs[-1][1] = a + n
        elif n:
            runs.append([a, a + n])
    return [tuple(r) for r in runs]


def _write_tiers(rows: dict, runs, w: bf.SegmentWriter, block: int = 4096):
    """rows[name] [C, ...] for each of the spec's chunk-major arrays."""
    for name in w.spec.arrays:
        for a, b in runs:
            for i in range(a, b, block):
                w.add(name, rows[name][i:min(b, i + block)])


def _write_new(bank: MemoryBank, tmp: str) -> tuple[str, bool]:
    """A new bank of the live documents in `tmp`; (generation, no slot was dropped)."""
    live = bank.live_slots()
    counts = np.asarray([bank.doc_num_chunks[s] for s in live], np.int64)
    w = bf.SegmentWriter(tmp, bank.spec, {})
    _write_tiers({n: bank.rows(n) for n in bank.spec.arrays}, _chunk_runs(bank, live), w)
    _slot_rows(bank, live, np.cumsum(counts) - counts, w)
    segment, lengths = w.finish()
    for name in _PREFIX:
        np.save(os.path.join(tmp, f"{name}.npy"), getattr(bank, name))
    gen = uuid.uuid4().hex
    _write_manifest(tmp, bank, gen, lengths, [segment], np.zeros(len(live), np.uint8))
    return gen, len(live) == bank.num_slots


def _append(bank: MemoryBank, path: str, manifest: dict):
    """Append the slots and chunks after the bank's origin; a new deleted-flags file and
    manifest make them valid (see the module docstring)."""
    origin = bank.origin
    w = bf.SegmentWriter(path, bank.spec, manifest["lengths"])
    new = range(origin["slots"], bank.num_slots)
    # rows past the origin were appended in this process: nothing to check before copying them
    _write_tiers(bank._tiers, [(origin["chunks"], bank.num_chunks)], w)
    _slot_rows(bank, new, [bank.doc_chunk_offset[s] for s in new], w)
    segment, lengths = w.finish()
    deleted = np.asarray([d is None for d in bank.doc_ids], np.uint8)
    gen = uuid.uuid4().hex
    _pause_at_swap()  # test seam: data appended, the manifest not yet replaced
    _write_manifest(path, bank, gen, lengths, manifest["segments"] + [segment], deleted)
    bank.origin = _origin(path, gen, bank)
    _remove_stale(path, f"deleted-{gen}.bin")


def _remove_stale(path: str, keep: str):
    """Deleted-flags files and manifest temporaries left by earlier or interrupted writes."""
    for stale in glob.glob(os.path.join(path, "deleted-*.bin")) + \
            glob.glob(os.path.join(path, f".{MANIFEST}.tmp-*")):
        if os.path.basename(stale) != keep:
            os.remove(stale)


def _write_manifest(folder: str, bank: MemoryBank, gen: str, lengths: dict, segments: list,
                    deleted: np.ndarray):
    name = f"deleted-{gen}.bin"
    atomic_write_bytes(os.path.join(folder, name), deleted.tobytes())
    prefix = {n: {"shape": list(getattr(bank, n).shape), "dtype": str(getattr(bank, n).dtype),
                  "sha256": _sha256(os.path.join(folder, f"{n}.npy"))} for n in _PREFIX}
    manifest = {"format_version": FORMAT_VERSION, "generation": gen,
                "spec": dataclasses.asdict(bank.spec), "prefix": prefix, "lengths": lengths,
                "segments": segments,
                "deleted": {"file": name, "sha256": _sha256(os.path.join(folder, name))}}
    atomic_write_bytes(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1).encode())


# -- reading ---------------------------------------------------------------------------------
def _format1_message(path: str) -> str:
    return (f"{path}: memory bank format 1 (written by an earlier msa-jax); this version reads "
            f"format {FORMAT_VERSION}: convert it once with "
            f"msa_jax.memory.store.convert_bank({path!r})")


def _read_manifest(path: str) -> dict:
    """manifest.json with every field checked."""
    where = os.path.join(path, MANIFEST)
    if not os.path.isfile(where):
        if os.path.isfile(os.path.join(path, "bank.json")):
            raise BankError(_format1_message(path))
        raise BankError(f"{path}: not a memory bank (no {MANIFEST})")
    m = _read_json(where)
    if isinstance(m, dict) and m.get("format_version") not in READS:
        raise BankError(f"{where}: bank format {m.get('format_version')!r}, this version reads "
                        f"{' and '.join(map(str, READS))}")
    _check_fields(m, _FIELDS, where)
    spec_fields = frozenset(f.name for f in dataclasses.fields(BankSpec))
    if m["format_version"] == 2:
        spec_fields -= {"routing_dtype"}  # added by format 3 (default: the tiers' dtype)
    _check_fields(m["spec"], spec_fields, f"{where}, spec")
    try:
        names = bf.files(BankSpec(**m["spec"]))
    except (BankError, TypeError) as e:
        raise BankError(f"{where}, spec: {e}") from None
    _check_fields(m["lengths"], frozenset(names), f"{where}, lengths")
    _check_fields(m["prefix"], frozenset(_PREFIX), f"{where}, prefix")
    ok = (all(type(v) is int and v >= 0 for v in m["lengths"].values())
          and isinstance(m["segments"], list)
          and all(_segment_ok(s, names) for s in m["segments"])
          and isinstance(m["deleted"], dict) and isinstance(m["deleted"].get("file"), str)
          and all(isinstance(p, dict) and isinstance(p.get("shape"), list)
                  for p in m["prefix"].values()))
    if not ok or _segment_ends(m["segments"], names) != m["lengths"]:
        raise BankError(f"{where}: malformed lengths, segments, prefix or deleted entry "
                        f"(edited or corrupt)")
    return m


def _segment_ok(s, names) -> bool:
    return (isinstance(s, dict) and isinstance(s.get("rows"), dict)
            and isinstance(s.get("sha256"), dict) and set(s["rows"]) == set(names)
            and all(isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r)
                    for r in s["rows"].values()))


def _segment_ends(segments: list, names) -> dict:
    """Each file's rows covered by consecutive segments (None if they leave a gap)."""
    end = dict.fromkeys(names, 0)
    for s in segments:
        for n, (a, b) in s["rows"].items():
            if a != end[n] or b < a:
                return None
            end[n] = b
    return end


def _read_prefix(path: str, m: dict, checksums: bool) -> list[np.ndarray]:
    out = []
    for name in _PREFIX:
        full, info = os.path.join(path, f"{name}.npy"), m["prefix"][name]
        if checksums and _sha256(full) != info.get("sha256"):
            raise BankError(f"{path}: {name}.npy does not match its checksum (corrupt or "
                            f"replaced)")
        try:
            value = np.load(full, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise BankError(f"{path}: {name}.npy is unreadable ({e})") from None
        if list(value.shape) != info["shape"] or str(value.dtype) != info.get("dtype"):
            raise BankError(f"{path}: {name}.npy is {value.dtype}{list(value.shape)}, the "
                            f"manifest says {info.get('dtype')}{info['shape']}")
        out.append(value)
    return out


def _read_deleted(path: str, m: dict, slots: int, checksums: bool) -> np.ndarray:
    name = m["deleted"]["file"]
    full = os.path.join(path, os.path.basename(name))
    if not os.path.isfile(full) or os.path.getsize(full) != slots:
        raise BankError(f"{path}: {name} is missing or does not hold {slots} flags (truncated "
                        f"or replaced)")
    if checksums and _sha256(full) != m["deleted"].get("sha256"):
        raise BankError(f"{path}: {name} does not match its checksum (corrupt or replaced)")
    deleted = np.fromfile(full, np.uint8)
    if deleted.max(initial=0) > 1:
        raise BankError(f"{path}: {name} holds values other than 0 and 1 (corrupt)")
    return deleted.astype(bool)


def _check_structure(path: str, cols: dict, lengths: dict, deleted: np.ndarray):
    """Per-slot columns consistent with each other and with the flat files and tiers."""
    def bad(what):
        return BankError(f"{path}: {what} (edited or corrupt)")

    off, cnt = cols["doc_chunk_offset"], cols["doc_num_chunks"]
    ends = off + cnt
    if (cnt < 0).any() or (off < 0).any() or (ends[:-1] > off[1:]).any() or \
            (len(off) and ends[-1] > lengths["routing_keys"]):
        raise bad("doc_chunk_offset.bin / doc_num_chunks.bin: chunk runs overlap or leave the "
                  "tiers")
    for count, flat in (("token_count", "tokens"), ("id_bytes", "ids"), ("text_bytes", "texts")):
        c = cols[count]
        if (c < (-1 if count == "text_bytes" else 0)).any() or \
                int(np.maximum(c, 0).sum()) != lengths[flat]:
            raise bad(f"{count}.bin does not add up to {flat}.bin")
    if (cols["id_bytes"][~deleted] == 0).any():
        raise bad("a live document has an empty id")


def load_bank(path: str, checksums: bool = True) -> MemoryBank:
    """Open a bank written by `save_bank` in place, after checking it (see the module
    docstring; `checksums=False` checks sizes and structure only)."""
    path = os.path.abspath(path)
    recover_for_reading(path, "memory bank")
    m = _read_manifest(path)
    spec, lengths, segments = BankSpec(**m["spec"]), m["lengths"], m["segments"]
    bf.check_sizes(path, spec, lengths)
    if checksums:
        for name in bf.SLOT_FILES + ("ids",):
            bf.verify_file(path, spec, name, segments)
    prefix_k, prefix_v = _read_prefix(path, m, checksums)
    slots = lengths["token_count"]
    if any(lengths[n] != slots for n in bf.SLOT_FILES):
        raise BankError(f"{path}: {MANIFEST}: per-slot files of different lengths "
                        f"{[lengths[n] for n in bf.SLOT_FILES]} (edited or corrupt)")
    if len({lengths[n] for n in spec.arrays}) != 1:
        raise BankError(f"{path}: {MANIFEST}: tiers of different lengths (edited or corrupt)")
    cols = {n: np.asarray(bf.open_rows(path, spec, n, slots)) for n in bf.SLOT_FILES}
    deleted = _read_deleted(path, m, slots, checksums)
    _check_structure(path, cols, lengths, deleted)
    ids = _decode_ids(path, bf.open_rows(path, spec, "ids", lengths["ids"]), cols["id_bytes"],
                      deleted)
    tokens = TokenColumn(bf.open_rows(path, spec, "tokens", lengths["tokens"]),
                         cols["token_count"])
    texts = TextColumn(bf.open_rows(path, spec, "texts", lengths["texts"]), cols["text_bytes"])
    for column, name in ((tokens, "tokens"), (texts, "texts")):
        for s in np.flatnonzero(deleted):
            column[int(s)] = None
        if checksums:
            column.on_read = bf.lazy_slot_check(path, spec, name, segments)
    tiers = {n: bf.open_rows(path, spec, n, lengths[n]) for n in spec.arrays}
    pending = {n: (lambda n=n: bf.verify_file(path, spec, n, segments)) for n in spec.arrays} \
        if checksums else {}
    bank = MemoryBank.restore(spec, prefix_k, prefix_v, tiers,
                              np.where(deleted, 0, cols["doc_num_chunks"]),
                              cols["doc_chunk_offset"], ids, tokens, texts, pending)
    bank.origin = {"path": path, "generation": m["generation"], "slots": slots,
                   "chunks": lengths["routing_keys"]}
    return bank


def _decode_ids(path: str, raw: np.ndarray, sizes: np.ndarray, deleted: np.ndarray) -> list:
    data = bytes(raw)
    ascii_ids = data.isascii()  # then byte offsets are character offsets: decode once
    text = data.decode("ascii") if ascii_ids else None
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    ids = []
    try:
        for s, dead in enumerate(deleted.tolist()):
            a, b = starts[s], starts[s + 1]
            ids.append(None if dead else text[a:b] if ascii_ids else data[a:b].decode("utf-8"))
    except UnicodeDecodeError:
        raise BankError(f"{path}: ids.bin is not utf-8 (corrupt)") from None
    live = [i for i in ids if i is not None]
    if len(set(live)) != len(live):
        raise BankError(f"{path}: ids.bin names a document twice (edited or corrupt)")
    return ids


def convert_bank(path: str, dest: str | None = None) -> str:
    """Convert a format-1 bank to format 2, at `dest` or in place (atomically). Returns the
    converted bank's path."""
    from msa_jax.memory.store_v1 import load_format1

    bank = load_format1(os.path.abspath(path))
    return save_bank(bank, dest or path, overwrite=dest is None)
