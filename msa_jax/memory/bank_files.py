"""The append-only data files of a format-2 bank (msa_jax.memory.store): rows written in
segments with a sha256 each, mapped in place to read, checked by segment.

Every file holds raw little-endian rows of a fixed dtype and row shape (below; tiers: the spec's
dtypes and [R, K, H]; the scales of an int8 routing tier: float32 [R, K]). The manifest records each file's valid length in rows; bytes past it are
the tail of an interrupted append, ignored by readers and cut by the next writer. Raw files rather
than .npy: a .npy header records the shape, so appending would rewrite the header in place, which
a kill could leave half-written.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np

from msa_jax.errors import BankError
from msa_jax.memory.bank import BankSpec

# per-slot columns [M] and the flat files whose per-slot lengths they hold
SLOT_FILES = ("doc_chunk_offset", "doc_num_chunks", "token_count", "id_bytes", "text_bytes")
FLAT_FILES = {"tokens": np.int32, "ids": np.uint8, "texts": np.uint8}
_FLUSH_BYTES = 1 << 24  # buffered rows are written in pieces of about this size


def files(spec: BankSpec) -> tuple[str, ...]:
    """The data files of a bank of `spec`: its chunk-major arrays, then the metadata."""
    return spec.arrays + SLOT_FILES + tuple(FLAT_FILES)


def file_name(name: str) -> str:
    return f"{name}.bin"


def row_format(spec: BankSpec, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape of one row) of a data file."""
    if name in spec.arrays:
        return spec.row_format(name)
    return np.dtype(FLAT_FILES.get(name, np.int64)), ()


def row_bytes(spec: BankSpec, name: str) -> int:
    dtype, shape = row_format(spec, name)
    return dtype.itemsize * int(np.prod(shape, dtype=np.int64))


class SegmentWriter:
    """Appends one segment to every data file of `folder`: rows added per file after its valid
    length (`lengths`, rows), hashed as written; `finish()` syncs them and returns the segment
    record and the new lengths. Nothing before the valid lengths is ever written."""

    def __init__(self, folder: str, spec: BankSpec, lengths: dict[str, int]):
        self.folder, self.spec, self.names = folder, spec, files(spec)
        self.start = {n: int(lengths.get(n, 0)) for n in self.names}
        self.rows = dict(self.start)
        self._hash = {n: hashlib.sha256() for n in self.names}
        self._buf: dict[str, list[bytes]] = {n: [] for n in self.names}
        self._buffered = dict.fromkeys(self.names, 0)
        self._files = {}

    def _open(self, name: str):
        if name not in self._files:
            path = os.path.join(self.folder, file_name(name))
            f = open(path, "r+b" if os.path.exists(path) else "wb")
            valid = self.start[name] * row_bytes(self.spec, name)
            f.truncate(valid)  # an interrupted append's tail (past the valid length)
            f.seek(valid)
            self._files[name] = f
        return self._files[name]

    def add(self, name: str, rows: np.ndarray):
        dtype, shape = row_format(self.spec, name)
        rows = np.ascontiguousarray(rows, dtype)
        if rows.shape[1:] != shape:
            raise BankError(f"{file_name(name)}: rows of shape {rows.shape[1:]}, expected {shape}")
        data = rows.tobytes() if rows.nbytes < _FLUSH_BYTES else memoryview(rows).cast("B")
        self._hash[name].update(data)
        self.rows[name] += len(rows)
        self._buf[name].append(data)
        self._buffered[name] += rows.nbytes
        if self._buffered[name] >= _FLUSH_BYTES:
            self._flush(name)

    def _flush(self, name: str):
        f = self._open(name)
        for data in self._buf[name]:
            f.write(data)
        self._buf[name], self._buffered[name] = [], 0

    def finish(self) -> tuple[dict, dict[str, int]]:
        for name in self.names:
            self._flush(name)
            f = self._open(name)  # every file exists, even when empty
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._files = {}
        segment = {"rows": {n: [self.start[n], self.rows[n]] for n in self.names},
                   "sha256": {n: self._hash[n].hexdigest() for n in self.names}}
        return segment, dict(self.rows)


def open_rows(folder: str, spec: BankSpec, name: str, rows: int, mode: str = "c") -> np.ndarray:
    """The first `rows` rows of a data file, memory-mapped (copy-on-write: changes stay in this
    process); the size was checked by `check_sizes`."""
    dtype, shape = row_format(spec, name)
    if rows == 0:
        return np.zeros((0,) + shape, dtype)
    return np.memmap(os.path.join(folder, file_name(name)), dtype, mode, shape=(rows,) + shape)


def check_sizes(folder: str, spec: BankSpec, lengths: dict[str, int]):
    """Every data file present and holding at least its recorded rows."""
    for name in files(spec):
        path = os.path.join(folder, file_name(name))
        want = lengths[name] * row_bytes(spec, name)
        if not os.path.isfile(path):
            raise BankError(f"{folder}: missing file {file_name(name)}")
        size = os.path.getsize(path)
        if size < want:
            raise BankError(f"{folder}: {file_name(name)} has {size} bytes, the manifest records "
                            f"{want} (truncated or replaced)")


def verify_segment(folder: str, spec: BankSpec, name: str, segment: dict, k: int):
    """Raise BankError if segment k of a data file does not match its checksum."""
    first, end = segment["rows"][name]
    per = row_bytes(spec, name)
    h = hashlib.sha256()
    with open(os.path.join(folder, file_name(name)), "rb") as f:
        f.seek(first * per)
        left = (end - first) * per
        while left:
            block = f.read(min(left, 1 << 24))
            if not block:
                break
            h.update(block)
            left -= len(block)
    if h.hexdigest() != segment["sha256"][name]:
        raise BankError(f"{folder}: {file_name(name)} (rows {first}..{end}, segment {k}) does not "
                        f"match its checksum (corrupt or replaced)")


def verify_file(folder: str, spec: BankSpec, name: str, segments: list[dict]):
    for k, segment in enumerate(segments):
        verify_segment(folder, spec, name, segment, k)


def lazy_slot_check(folder: str, spec: BankSpec, name: str, segments: list[dict]
                    ) -> Callable[[int], None]:
    """on_read(slot) for a flat column: checks the segment holding the slot's rows the first
    time one of its slots is read (per-slot files give the slot ranges of segments)."""
    ends = np.asarray([s["rows"]["token_count"][1] for s in segments], np.int64)
    checked: set[int] = set()

    def on_read(slot: int):
        k = int(np.searchsorted(ends, slot, side="right"))
        if k not in checked:
            verify_segment(folder, spec, name, segments[k], k)
            checked.add(k)

    return on_read
