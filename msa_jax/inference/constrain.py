"""Decoding constrained to a set of token sequences: a trie written as a next-state table.

Memory Interleave can restrict a round's response to the documents that round routed
(`MSAModel.ask(..., constrain_ids=True)`): the allowed responses are "[id]<|object_ref_end|>" for
each routed id and "<End-of-Retrieve>", and the decode loop masks every other token. The table is
an array the jitted loop indexes ([S, V] int32: state -> token -> next state, -1 where the token is
not allowed), so the allowed set changes per round without recompiling (S is bucketed).

A leaf of the inference package: NumPy and the project's padding rules.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kernels_pallas.common import next_pow2

ROOT, FREE = 0, 1  # the state before the first token; the state after a complete sequence


def _trie(sequences: Sequence[Sequence[int]], vocab_size: int) -> list[dict[int, int]]:
    """Children per node; node 0 is the root and node 1 the (childless) FREE node."""
    nodes: list[dict[int, int]] = [{}, {}]
    ends: set[int] = set()
    for i, seq in enumerate(sequences):
        if not seq:
            raise ValueError(f"allowed sequence {i} is empty")
        node = ROOT
        for tok in seq:
            if not 0 <= int(tok) < vocab_size:
                raise ValueError(f"allowed sequence {i} has token {tok} outside the vocabulary "
                                 f"of {vocab_size}")
            if node in ends:
                raise ValueError(f"allowed sequence {i} extends another allowed sequence: a "
                                 "prefix cannot end a constrained response")
            node = nodes[node].setdefault(int(tok), len(nodes))
            if node == len(nodes):
                nodes.append({})
        if nodes[node]:
            raise ValueError(f"allowed sequence {i} is a prefix of another allowed sequence")
        ends.add(node)
    return nodes


def next_state_table(sequences: Sequence[Sequence[int]], vocab_size: int,
                     min_states: int = 8) -> np.ndarray:
    """[S, V] int32 next-state table of the trie of `sequences` (S: a power of two >= the nodes).

    From ROOT only the sequences' first tokens are allowed; after a sequence's last token the
    state is FREE, where every token is allowed (end each sequence with a stop token to end the
    response there). A sequence that is a prefix of another is refused (ValueError)."""
    if not sequences:
        raise ValueError("no allowed sequences")
    nodes = _trie(sequences, vocab_size)
    # states: ROOT, FREE, then the inner nodes (a leaf is FREE: its sequence is complete)
    state = {ROOT: ROOT, FREE: FREE}
    for node in range(2, len(nodes)):
        if nodes[node]:
            state[node] = len(state)
    states = next_pow2(len(state), min_states)
    table = np.full((states, vocab_size), -1, np.int32)
    table[FREE] = FREE
    for node, children in enumerate(nodes):
        for tok, child in children.items():
            table[state[node], tok] = state[child] if nodes[child] else FREE
    return table


def follows(table: np.ndarray, tokens: Sequence[int]) -> bool:
    """Whether `tokens` is allowed by `table` from ROOT (a prefix of an allowed sequence, or an
    allowed sequence and anything after it)."""
    state = ROOT
    for tok in tokens:
        state = int(table[state, tok])
        if state < 0:
            return False
    return True
