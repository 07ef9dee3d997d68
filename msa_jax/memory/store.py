"""Saving and loading memory banks (orbax for the arrays), with an integrity check.

Layout of a bank directory (written atomically, under the destination's lock: a temporary
directory renamed when complete; see msa_jax.atomic for concurrent and interrupted writers):
    bank.json        format version, spec (model fingerprint, shapes, dtype), counts
    documents.jsonl  one line per document slot: id (null if deleted), chunk offset and count,
                     tokens, text
    arrays/          orbax checkpoint: tiers [R, C, K, H] and prefix K/V [L, Pf, K, H]
    integrity.json   size and sha256 of every other file
Loading verifies sizes always and checksums by default, so a truncated or swapped file is caught
before use, and a bank left missing by a replacement killed mid-swap is recovered first. A bank
whose model fingerprint differs from the model using it is refused elsewhere (msa_jax.api, the
encoder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from msa_jax.atomic import atomic_directory, claim, recover_for_reading
from msa_jax.errors import parse_json
from msa_jax.memory.bank import BankError, BankSpec, MemoryBank

FORMAT_VERSION = 1
_ARRAYS = ("routing_keys", "content_k", "content_v")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: str) -> list[str]:
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(p for p in out if p != "integrity.json")


def _write_integrity(root: str):
    table = {p: {"size": os.path.getsize(os.path.join(root, p)),
                 "sha256": _sha256(os.path.join(root, p))} for p in _files(root)}
    with open(os.path.join(root, "integrity.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, sort_keys=True)


def verify(root: str, checksums: bool = True):
    """Raise BankError if a file of the bank is missing, truncated, extra or (with checksums)
    altered."""
    path = os.path.join(root, "integrity.json")
    if not os.path.exists(path):
        raise BankError(f"{root}: not a memory bank (no integrity.json)")
    table = _read_json(path)
    entry = {"size": int, "sha256": str}
    if not isinstance(table, dict) or not all(
            isinstance(v, dict) and all(isinstance(v.get(k), t) for k, t in entry.items())
            for v in table.values()):
        raise BankError(f"{path}: not an integrity table ({{file: {{size, sha256}}}}): "
                        "truncated or corrupt")
    present = set(_files(root))
    missing = sorted(set(table) - present)
    if missing:
        raise BankError(f"{root}: missing files {missing[:5]}")
    extra = sorted(present - set(table))
    if extra:
        raise BankError(f"{root}: files not written with this bank {extra[:5]}")
    for rel, info in table.items():
        full = os.path.join(root, rel)
        size = os.path.getsize(full)
        if size != info["size"]:
            raise BankError(f"{root}: {rel} has {size} bytes, expected {info['size']} "
                            f"(truncated or replaced)")
        if checksums and _sha256(full) != info["sha256"]:
            raise BankError(f"{root}: {rel} does not match its checksum (corrupt or replaced)")


def _read_json(path: str):
    """A JSON file of the bank; a truncated or corrupt one is a BankError naming it."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return parse_json(raw, path, BankError)
    except BankError as e:
        raise BankError(f"{e} (truncated or corrupt)") from None


# bank.json: every field save_bank writes, and those of its spec (BankSpec)
_META_FIELDS = frozenset({"format_version", "spec", "num_docs", "prefix_dtype", "shapes", "stored"})
_DOC_FIELDS = frozenset({"id", "num_chunks", "tokens", "text"})


def _check_fields(value, expected: frozenset, where: str):
    if not isinstance(value, dict):
        raise BankError(f"{where}: expected a JSON object, got {type(value).__name__}")
    missing, unknown = sorted(expected - set(value)), sorted(set(value) - expected)
    problems = ([f"missing fields {missing}"] if missing else []) + \
        ([f"unknown fields {unknown}"] if unknown else [])
    if problems:
        raise BankError(f"{where}: {'; '.join(problems)} (written by another version, or edited)")


def _read_meta(path: str) -> tuple[dict, BankSpec]:
    """bank.json and its spec, every field checked."""
    where = os.path.join(path, "bank.json")
    meta = _read_json(where)
    if isinstance(meta, dict) and meta.get("format_version") != FORMAT_VERSION:
        raise BankError(f"{path}: bank format {meta.get('format_version')}, this version reads "
                        f"{FORMAT_VERSION}")
    _check_fields(meta, _META_FIELDS, where)
    spec_fields = frozenset(f.name for f in dataclasses.fields(BankSpec))
    _check_fields(meta["spec"], spec_fields, f"{where}, spec")
    _check_fields(meta["shapes"], frozenset(_ARRAYS + ("prefix_k", "prefix_v")),
                  f"{where}, shapes")
    bad = [k for k, v in meta["shapes"].items()
           if not (isinstance(v, list) and len(v) == 4 and all(type(n) is int for n in v))]
    if bad or not (isinstance(meta["stored"], list) and set(meta["stored"]) <= set(meta["shapes"])):
        raise BankError(f"{where}: malformed shapes {bad} or stored list (edited or corrupt)")
    return meta, BankSpec(**meta["spec"])


def _read_documents(path: str) -> list[dict]:
    where = os.path.join(path, "documents.jsonl")
    docs = []
    with open(where, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                doc = parse_json(line, f"{where}, line {lineno}", BankError, at_line=False)
                _check_fields(doc, _DOC_FIELDS, f"{where}, line {lineno}")
                docs.append(doc)
    return docs


def _live_arrays(bank: MemoryBank) -> tuple[dict[str, np.ndarray], list[int]]:
    """Tiers and chunk map of the live documents only (no copy when nothing was deleted)."""
    live = bank.live_slots()
    if len(live) == bank.num_slots:
        chunks = slice(None)
    else:
        chunks = np.concatenate([np.arange(bank.doc_chunk_offset[s],
                                           bank.doc_chunk_offset[s] + bank.doc_num_chunks[s])
                                 for s in live]) if live else np.zeros(0, np.int64)
    arrays = {name: np.ascontiguousarray(bank.tier(name)[:, chunks]) for name in _ARRAYS}
    return arrays, live


def save_bank(bank: MemoryBank, path: str, overwrite: bool = False) -> str:
    """Write the bank's live documents (deleted slots are dropped) to `path`, atomically."""
    with claim(path, overwrite) as path:  # a locked or unwritable path fails before the copy
        _write(bank, path, overwrite)
    return path


def _write(bank: MemoryBank, path: str, overwrite: bool):
    import orbax.checkpoint as ocp

    arrays, live = _live_arrays(bank)
    arrays["prefix_k"], arrays["prefix_v"] = bank.prefix_k, bank.prefix_v
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    nonempty = {k: v for k, v in arrays.items() if v.size}  # orbax refuses zero-size arrays
    with atomic_directory(path, overwrite=overwrite) as tmp:
        if nonempty:
            ckpt = ocp.StandardCheckpointer()
            ckpt.save(os.path.join(tmp, "arrays"), nonempty)
            ckpt.wait_until_finished()
        meta = {"format_version": FORMAT_VERSION, "spec": dataclasses.asdict(bank.spec),
                "num_docs": len(live), "prefix_dtype": str(bank.prefix_k.dtype),
                "shapes": shapes, "stored": sorted(nonempty)}
        with open(os.path.join(tmp, "bank.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        with open(os.path.join(tmp, "documents.jsonl"), "w", encoding="utf-8") as f:
            for s in live:
                f.write(json.dumps({"id": bank.doc_ids[s], "num_chunks": bank.doc_num_chunks[s],
                                    "tokens": list(bank.doc_tokens[s]),
                                    "text": bank.doc_texts[s]}) + "\n")
        _write_integrity(tmp)


def load_bank(path: str, checksums: bool = True) -> MemoryBank:
    """Read a bank written by `save_bank`, after checking its files (see `verify`)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    recover_for_reading(path, "memory bank")
    verify(path, checksums)
    meta, spec = _read_meta(path)
    arrays = {}
    if meta["stored"]:
        arrays = ocp.StandardCheckpointer().restore(os.path.join(path, "arrays"))
    for name, shape in meta["shapes"].items():
        dtype = meta["prefix_dtype"] if name.startswith("prefix") else spec.dtype
        value = np.asarray(arrays[name]) if name in arrays else np.zeros(shape, dtype)
        if list(value.shape) != shape:
            raise BankError(f"{path}: array {name} has shape {value.shape}, bank.json says {shape}")
        arrays[name] = value
    docs = _read_documents(path)
    counts = [d["num_chunks"] for d in docs]
    if len(docs) != meta["num_docs"] or sum(counts) != meta["shapes"]["routing_keys"][1]:
        raise BankError(f"{path}: documents.jsonl ({len(docs)} documents, {sum(counts)} chunks) "
                        f"does not match the arrays")
    bank = MemoryBank(spec, arrays["prefix_k"], arrays["prefix_v"])
    bank.append([d["id"] for d in docs], [d["tokens"] for d in docs], [d["text"] for d in docs],
                counts, *(arrays[n] for n in _ARRAYS))
    return bank
