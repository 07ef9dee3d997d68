import os
import sys

import jax
import pytest

# `import kernel_testing` / `import kernel_oracles` work whatever the rootdir and import mode.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True, scope="session")
def _poison_pallas_buffers():
    """NaN-fill Pallas scratch buffers (outputs are NaN-initialised by interpret mode already)."""
    previous = jax.config.jax_pallas_poison_buffers
    jax.config.update("jax_pallas_poison_buffers", True)
    yield
    jax.config.update("jax_pallas_poison_buffers", previous)
