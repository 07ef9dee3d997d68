"""Reading memory banks of format 1 (msa-jax before format 2), to convert them
(`msa_jax.memory.store.convert_bank`); nothing writes this format any more.

Layout of a format-1 bank directory:
    bank.json        format version, spec (model fingerprint, shapes, dtype), counts
    documents.jsonl  one line per document slot: id (null if deleted), chunk offset and count,
                     tokens, text
    arrays/          orbax checkpoint: tiers [R, C, K, H] and prefix K/V [L, Pf, K, H]
    integrity.json   size and sha256 of every other file
Reading verifies sizes always and checksums by default, so a truncated or swapped file is caught
before use. The whole bank is read into memory (orbax restores every array).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

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
    spec_fields = frozenset(f.name for f in dataclasses.fields(BankSpec)) - {"routing_dtype"}
    _check_fields(meta["spec"], spec_fields, f"{where}, spec")  # format 1: one dtype per bank
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


def load_format1(path: str, checksums: bool = True) -> MemoryBank:
    """Read a format-1 bank into memory, after checking its files (see `verify`)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
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
