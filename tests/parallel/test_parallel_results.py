"""Memory parallel on 1, 2, 4 and 8 fake CPU devices gives the single-device answers."""

import jax
import numpy as np
import pytest

from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from tests.parallel import common

MESHES = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 4)]  # (data, memory)


@pytest.fixture(scope="module")
def placements():
    return {(d, m): MemoryPlacement(memory_mesh(d, jax.devices()[:d * m])) for d, m in MESHES}


@pytest.mark.parametrize("data,memory", MESHES)
def test_same_results_on_every_mesh(model, bank, rows, reference, placements, data, memory):
    got = common.run(model, bank, rows, placements[data, memory])
    # Another device count compiles another program (SPMD partitioning, per-shard scoring): equal
    # up to float32 reassociation, not guaranteed bit-equal, hence assert_same_result's tolerances.
    common.assert_same_result(reference, got, where=f"data={data} memory={memory}")


def test_ask_tokens_with_placement(model, bank, rows, reference, placements):
    """The public API: ask_tokens(placement=) reports the same documents by id."""
    new, choices = model.ask_tokens(rows, bank, common.MAX_NEW, placement=placements[1, 4])
    common.assert_same_first_tokens(reference, new, logit_tol=1e-5, where="ask_tokens")
    for b, (row, ref_row, ref_scores) in enumerate(zip(choices, reference.slots,
                                                       reference.scores)):
        for layer, (c, slots, scores) in enumerate(zip(row, ref_row, ref_scores)):
            ids = [bank.doc_ids[s] for s in slots]
            common.assert_same_choice(ids, scores, c.docs, c.scores,
                                      where=f"ask_tokens row {b} router layer {layer}")


def test_layout_balanced_and_sharded(bank, placements):
    placement = placements[1, 8]
    plan = placement.plan(bank)
    view = placement.view(bank)
    used = plan.assign.used
    assert used.sum() == bank.num_chunks
    assert used.max() - used.min() <= max(bank.doc_num_chunks)  # greedy bound
    cs, spec = plan.shard_chunks, bank.spec
    for name in ("routing_keys", "content_k", "content_v"):
        layers = getattr(view, name)
        assert len(layers) == spec.num_router_layers
        kind = "device" if name == "routing_keys" else "pinned_host"
        for arr in layers:
            assert arr.shape == (8 * cs, spec.num_kv_heads, spec.head_dim)
            assert arr.sharding.memory_kind == kind
            assert {s.data.shape[0] for s in arr.addressable_shards} == {cs}  # a shard per device
    # every document's chunks, read back from its shard, are the bank's
    offset, count = np.asarray(view.doc_chunk_offset), np.asarray(view.doc_num_chunks)
    content = np.stack([np.asarray(x) for x in view.content_k])  # [R, S*Cs, K, H]
    for slot in range(bank.num_slots):
        src = bank.doc_chunk_offset[slot]
        n = bank.doc_num_chunks[slot]
        assert count[slot] == n
        np.testing.assert_array_equal(content[:, offset[slot]:offset[slot] + n],
                                      bank.tier("content_k")[:, src:src + n])


def test_view_cached_until_bank_changes(bank, placements):
    placement = placements[1, 2]
    assert placement.view(bank) is placement.view(bank)
