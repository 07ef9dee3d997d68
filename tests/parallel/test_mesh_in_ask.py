"""`ask_tokens(placement=)` runs the model under the placement's mesh (sharding.use_mesh), so the
model's activation constraints bind to it; without a placement no mesh is set."""

import dataclasses

import jax

from msa_jax.memory.parallel import MemoryPlacement, ShardedSelect, memory_mesh
from tests.parallel import common

SEEN: list[dict] = []  # the mesh in context each time a router layer's select was traced


@dataclasses.dataclass(frozen=True)
class _SpySelect(ShardedSelect):
    def __call__(self, cfg, memory, r, qr, routing_mask):
        SEEN.append(dict(jax.sharding.get_abstract_mesh().shape))
        return super().__call__(cfg, memory, r, qr, routing_mask)


def test_ask_tokens_traces_under_the_placement_mesh(model, bank, rows, reference):
    placement = MemoryPlacement(memory_mesh(2, jax.devices()[:4]))  # data=2, memory=2
    placement.select = _SpySelect(placement.mesh)
    SEEN.clear()
    new, choices = model.ask_tokens(rows, bank, common.MAX_NEW, placement=placement)
    assert SEEN and all(s == {"data": 2, "memory": 2, "model": 1} for s in SEEN), SEEN
    assert jax.sharding.get_abstract_mesh().empty  # and it is unset afterwards
    # answers as on one device; the batch split over data may change scores by float32
    # reassociation, so documents agree up to ties (the tolerances of test_parallel_results)
    assert new == reference.tokens
    for b, row in enumerate(choices):
        assert [c.layer for c in row] == list(model.cfg.msa.router_layers)
        for layer, c in enumerate(row):
            ref_ids = [bank.doc_ids[s] for s in reference.slots[b][layer]]
            common.assert_same_choice(ref_ids, reference.scores[b][layer], c.docs, c.scores,
                                      where=f"row {b} router layer {layer}")
