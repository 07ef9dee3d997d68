"""Memory parallel with an int8 routing tier: the scales shard with the routing tier (built whole
and grown in place block by block while encoding), and every mesh gives the single-device int8
bank's answers."""

import jax
import pytest

from msa_jax.memory.encoder import DocInput
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from tests.parallel import common

MESHES = [(1, 2), (2, 4)]  # (data, memory)


def _docs(docs):
    return [DocInput(str(i), tuple(d)) for i, d in enumerate(docs)]


@pytest.fixture(scope="module")
def int8_bank(model, docs):
    return model.encode_memory(_docs(docs), block_tokens=common.BLOCK_TOKENS, progress=False,
                               routing_dtype="int8")


@pytest.mark.parametrize("data,memory", MESHES)
def test_int8_bank_same_results_on_every_mesh(model, int8_bank, rows, data, memory):
    reference = common.run(model, int8_bank, rows)  # one device: MemoryBank.view, local select
    placement = MemoryPlacement(memory_mesh(data, jax.devices()[:data * memory]))
    view = placement.view(int8_bank)
    assert view.routing_keys[0].dtype == "int8" and len(view.routing_scale) == 2
    assert view.routing_scale[0].shape == (view.routing_keys[0].shape[0],
                                           int8_bank.spec.num_kv_heads)
    # another device count compiles another program: equal up to float32 reassociation
    common.assert_same_result(reference, common.run(model, int8_bank, rows, placement),
                              where=f"int8 data={data} memory={memory}")


def test_int8_tiers_grown_in_place_while_encoding(model, docs, rows):
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:4]))
    bank = placement.encode(model.cfg, model.params, _docs(docs)[:20], routing_dtype="int8",
                            block_tokens=common.BLOCK_TOKENS)
    placement.encode(model.cfg, model.params, _docs(docs)[20:], bank=bank,
                     block_tokens=common.BLOCK_TOKENS)
    assert placement.stats["appended"] > 0  # the scales were written into the sharded arrays
    common.assert_same_result(common.run(model, bank, rows), common.run(model, bank, rows,
                                                                        placement),
                              where="int8, encoded into the placement")
