"""Per-document columns of a memory bank stored flat: token ids and texts.

A bank keeps, per document slot, its token ids and (optionally) its text. Stored as Python objects
they cost ~40 B per token; here they are one flat array plus per-slot lengths. The first `base`
slots may come from a saved bank's files (memory-mapped, read only for the slots asked for);
slots appended later are held in memory until the bank is saved (token ids as int32 arrays). A
deleted slot reads None.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np

_KEYS = itertools.count()  # keys of appended slots (saved slots have negative keys)


def _starts(lengths: np.ndarray) -> np.ndarray:
    """[n] lengths -> [n + 1] start offsets."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(np.maximum(lengths, 0), out=out[1:])
    return out


class _Column:
    """slot -> value or None (deleted); the first `base` slots decoded from `flat` on demand."""

    def __init__(self, flat: np.ndarray, lengths: np.ndarray):
        self._flat = flat  # [sum(lengths)] possibly a memmap
        self._lengths = np.asarray(lengths, np.int64)  # [base], -1: no value
        self._start = _starts(self._lengths)
        self._base = len(self._lengths)
        self._tail: list = []
        self._tail_keys: list[int] = []
        self._dead: set[int] = set()
        self.on_read = None  # on_read(slot) before a saved slot is read (lazy checksums)

    def _decode(self, raw: np.ndarray):
        raise NotImplementedError

    def _to_tail(self, value):
        """What an appended slot holds in memory until the bank is saved."""
        return value

    def _from_tail(self, held):
        return held

    def __len__(self) -> int:
        return self._base + len(self._tail)

    def _check(self, slot: int) -> int:
        if not isinstance(slot, (int, np.integer)) or not 0 <= slot < len(self):
            raise IndexError(f"slot {slot!r} out of range (0..{len(self) - 1})")
        return int(slot)

    def __getitem__(self, slot: int):
        slot = self._check(slot)
        if slot in self._dead:
            return None
        if slot >= self._base:
            return self._from_tail(self._tail[slot - self._base])
        if self._lengths[slot] < 0:
            return None
        return self._decode(self._saved(slot))

    def _saved(self, slot: int) -> np.ndarray:
        if self.on_read is not None:
            self.on_read(slot)
        return self._flat[self._start[slot]:self._start[slot + 1]]

    def __setitem__(self, slot: int, value):
        if value is not None:
            raise TypeError("a document's column can only be cleared (set to None: deleted)")
        self._dead.add(self._check(slot))

    def __iter__(self) -> Iterator:
        return (self[s] for s in range(len(self)))

    def __eq__(self, other):
        return isinstance(other, (list, tuple, _Column)) and list(self) == list(other)

    def append(self, value):
        self._tail.append(self._to_tail(value))
        self._tail_keys.append(next(_KEYS))

    def keys(self) -> list[int | None]:
        """Per slot, a key that changes whenever the slot's value does (None: deleted): what
        identifies the column's contents cheaply, without decoding its values."""
        keys = list(range(-1, -self._base - 1, -1)) + self._tail_keys
        for s in self._dead:
            keys[s] = None
        return keys

    def pop(self):
        slot = len(self) - 1
        value = self[slot]
        self._dead.discard(slot)
        if self._tail:
            self._tail.pop()
            self._tail_keys.pop()
        else:
            self._base -= 1
            self._lengths = self._lengths[:-1]
            self._start = self._start[:-1]
        return value


class TokenColumn(_Column):
    """doc_tokens: slot -> tuple of token ids (None: deleted); int32 flat, and int32 arrays for
    the slots appended since the last save."""

    def __init__(self, flat: np.ndarray | None = None, lengths: np.ndarray | None = None):
        super().__init__(np.zeros(0, np.int32) if flat is None else flat,
                         np.zeros(0, np.int64) if lengths is None else lengths)

    def _decode(self, raw: np.ndarray) -> tuple[int, ...]:
        return tuple(raw.tolist())

    def _to_tail(self, tokens: Sequence[int]) -> np.ndarray:
        # int32, copied: 4 B per token (a tuple of Python ints costs 8-36 B: 3.6 GB at 100M
        # tokens), and the caller's array may change later
        held = np.array(tokens, np.int32).reshape(-1)
        held.flags.writeable = False  # `array(slot)` hands it out: no one changes it in place
        return held

    def _from_tail(self, held: np.ndarray) -> tuple[int, ...]:
        return tuple(held.tolist())

    def array(self, slot: int) -> np.ndarray:
        """Slot's token ids as int32 (empty if deleted), read in place for saved slots."""
        slot = self._check(slot)
        if slot in self._dead:
            return np.zeros(0, np.int32)
        if slot < self._base:
            return np.asarray(self._saved(slot), np.int32)
        return self._tail[slot - self._base]

    def live_total(self) -> int:
        """Tokens of the live slots, without decoding them."""
        dead_base = [s for s in self._dead if s < self._base]
        total = int(self._start[self._base]) - int(np.sum(self._lengths[dead_base]))
        return total + sum(len(t) for i, t in enumerate(self._tail)
                           if self._base + i not in self._dead)


class TextColumn(_Column):
    """doc_texts: slot -> str or None (no text stored, or deleted); utf-8 flat."""

    def __init__(self, flat: np.ndarray | None = None, lengths: np.ndarray | None = None):
        super().__init__(np.zeros(0, np.uint8) if flat is None else flat,
                         np.zeros(0, np.int64) if lengths is None else lengths)

    def _decode(self, raw: np.ndarray) -> str:
        return bytes(raw).decode("utf-8")
