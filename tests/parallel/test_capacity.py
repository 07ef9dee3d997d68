"""Per-device budgets: a bank too big for one device is spread over the mesh; one that fits on no
number of devices (or whose content tier overflows pinned host memory) is refused up front."""

import jax
import pytest

from msa_jax.memory.bank import BankError
from msa_jax.memory.capacity import Demand, params_bytes
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from tests.parallel import common


@pytest.fixture(scope="module")
def bank():
    return common.synthetic_bank(400, max_chunks=8)


@pytest.fixture(scope="module")
def demand(model):
    return Demand(batch=2, top_k_docs=4, weights=params_bytes(model.params))


def per_device(bank, demand, shards: int) -> int:
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:shards]), demand=demand)
    return placement.capacity(bank).device


def test_budget_spreads_the_bank_over_more_devices(bank, demand):
    one, two = per_device(bank, demand, 1), per_device(bank, demand, 2)
    assert two < one
    budget = (one + two) // 2  # fits on two devices, not on one
    with pytest.raises(BankError, match="at least 2 memory shards") as err:
        MemoryPlacement(memory_mesh(1, jax.devices()[:1]), device_budget_bytes=budget,
                        demand=demand).view(bank)
    message = str(err.value)
    assert "routing tier shard" in message and "weights" in message and "per device" in message
    placement = MemoryPlacement.for_bank(bank, budget, demand=demand)
    assert placement.num_shards == 2
    view = placement.view(bank)
    shard = view.routing_keys[0].addressable_shards[0].data
    assert shard.nbytes < bank.tier("routing_keys")[0].nbytes


def test_refused_when_no_mesh_is_enough(bank, demand):
    budget = demand.weights  # the weights alone fill it
    placement = MemoryPlacement(memory_mesh(1, jax.devices()), device_budget_bytes=budget,
                                demand=demand)
    with pytest.raises(BankError, match="no number of memory shards"):
        placement.view(bank)
    assert len(placement._placed) == 0  # refused before anything was placed
    with pytest.raises(BankError, match="does not fit the device budget"):
        MemoryPlacement.for_bank(bank, budget, demand=demand)


def test_content_tier_over_the_host_budget(bank, demand):
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:2]), demand=demand,
                                host_budget_bytes=1 << 10)
    with pytest.raises(BankError, match="XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB"):
        placement.view(bank)
