"""Encoding straight into the sharded tiers: each stage-1 block's chunks are written into their
shards in place; no device ever holds more than its shard."""

import jax
import numpy as np

from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from tests.parallel import common

FIELDS = ("routing_keys", "content_k", "content_v", "chunk_doc", "doc_chunk_offset",
          "doc_num_chunks", "chunk_local_doc", "local_doc_slot")


def test_encode_into_shards_matches_a_fresh_placement(model, docs):
    devices = jax.devices()[:4]
    placement = MemoryPlacement(memory_mesh(1, devices))
    bank = placement.encode(model.cfg, model.params, docs[:24], block_tokens=64)
    assert placement.stats["appended"] >= 8  # block after block, in place
    grown = placement.view(bank)
    fresh = MemoryPlacement(memory_mesh(1, devices)).view(bank)  # laid out from scratch
    assert grown.max_doc_chunks == fresh.max_doc_chunks
    for name in FIELDS:  # bit-equal: both views copy the same bank's arrays (data movement)
        a, b = getattr(grown, name), getattr(fresh, name)
        for x, y in (zip(a, b) if isinstance(a, tuple) else [(a, b)]):  # tiers: per layer
            assert x.shape == y.shape and x.sharding == y.sharding, name
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    for name in ("routing_keys", "content_k"):  # each device holds one shard, never the bank
        for layer in getattr(grown, name):
            shards = layer.addressable_shards
            assert len({s.device for s in shards}) == 4
            assert all(s.data.shape[0] * 4 == layer.shape[0] for s in shards)


def test_appending_to_a_placed_bank_answers_like_one_device(model, docs, rows, reference):
    """Encode part of the corpus, place it, append the rest through the placement: the grown
    view answers as the single-device bank does (same mesh as test_parallel_results: no new
    compilation)."""
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:2]))
    bank = placement.encode(model.cfg, model.params, docs[:30], block_tokens=common.BLOCK_TOKENS)
    bank = placement.encode(model.cfg, model.params, docs[30:], bank=bank,
                            block_tokens=common.BLOCK_TOKENS)
    assert bank.doc_ids == [str(i) for i in range(len(docs))]
    common.assert_same_result(reference, common.run(model, bank, rows, placement))
