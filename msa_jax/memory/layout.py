"""Packing documents into stage-1 blocks (docs/msa.md §3).

Documents are taken in order and packed into blocks of at most `block_tokens` tokens; a block never
splits a document. Each block becomes fixed-shape arrays (one compiled encoder for all blocks):
tokens, document-wise positions, segment ids (the document's index inside the block, -1 = padding)
and chunk ids (which pooled chunk of the block each token averages into).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from kernels_pallas.common import cdiv, next_pow2, round_up
from msa_jax.errors import LayoutError


@dataclasses.dataclass(frozen=True)
class Block:
    first_doc: int  # index of the block's first document in the corpus
    num_docs: int
    tokens: np.ndarray  # [L] int32
    positions: np.ndarray  # [L] int32, restarting at 0 per document
    segment_ids: np.ndarray  # [L] int32, document index inside the block, -1 = pad
    chunk_ids: np.ndarray  # [L] int32, chunk index inside the block, -1 = pad
    doc_num_chunks: np.ndarray  # [num_docs] int32
    doc_num_tokens: np.ndarray  # [num_docs] int32

    @property
    def num_chunks(self) -> int:
        return int(self.doc_num_chunks.sum())

    @property
    def num_tokens(self) -> int:
        return int(self.doc_num_tokens.sum())


def num_chunks(length: int, pool: int) -> int:
    return cdiv(length, pool)


def plan_blocks(lengths: Sequence[int], block_tokens: int) -> list[tuple[int, int]]:
    """[(first_doc, num_docs)] packing documents in order, a block <= block_tokens tokens."""
    plan: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(lengths):
        if n < 1:
            raise LayoutError(f"document {i} is empty")
        if n > block_tokens:
            raise LayoutError(f"document {i} has {n} tokens, more than a block of {block_tokens} "
                              f"(raise block_tokens, or split the document)")
        if used + n > block_tokens:
            plan.append((start, i - start))
            start, used = i, 0
        used += n
    if lengths:
        plan.append((start, len(lengths) - start))
    return plan


def auto_block_tokens(lengths: Sequence[int], pool: int, target: int = 4096) -> int:
    """A block size (power of two, multiple of P) that holds the longest document: `target`
    tokens, less for a corpus smaller than that, more for a longer document."""
    longest = max(lengths) if lengths else 1
    size = max(min(target, next_pow2(sum(lengths))), pool, next_pow2(longest))
    return round_up(size, pool)


def max_block_chunks(lengths: Sequence[int], plan: Sequence[tuple[int, int]], pool: int) -> int:
    """The most chunks any block of the plan has, rounded up to a multiple of 64."""
    most = max((sum(num_chunks(lengths[i], pool) for i in range(s, s + n)) for s, n in plan),
               default=1)
    return round_up(most, 64)


def make_block(docs: Sequence[Sequence[int]], first_doc: int, block_tokens: int,
               pool: int, length_multiple: int | None = None) -> Block:
    """Pack `docs` (token-id sequences) into one padded block: of `block_tokens` tokens, or of
    the documents' tokens rounded up to `length_multiple` (a divisor of block_tokens: at most
    block_tokens / length_multiple block shapes, each compiled once)."""
    used = sum(len(d) for d in docs)
    if used > block_tokens:
        raise LayoutError(f"{used} tokens do not fit a block of {block_tokens}")
    length = block_tokens if length_multiple is None else max(round_up(used, length_multiple),
                                                              length_multiple)
    tokens = np.zeros(length, np.int32)
    positions = np.zeros(length, np.int32)
    segment = np.full(length, -1, np.int32)
    chunk = np.full(length, -1, np.int32)
    counts, lengths = [], []
    at, chunk_at = 0, 0
    for j, doc in enumerate(docs):
        n = len(doc)
        pos = np.arange(n, dtype=np.int32)
        tokens[at:at + n] = doc
        positions[at:at + n] = pos
        segment[at:at + n] = j
        chunk[at:at + n] = chunk_at + pos // pool
        counts.append(num_chunks(n, pool))
        lengths.append(n)
        at += n
        chunk_at += counts[-1]
    return Block(first_doc, len(docs), tokens, positions, segment, chunk,
                 np.asarray(counts, np.int32), np.asarray(lengths, np.int32))
