"""Fixtures of the memory-parallel tests: one tiny model, bank and reference run per session."""

import pytest

from tests.parallel import common


@pytest.fixture(scope="session")
def model():
    return common.tiny_model()


@pytest.fixture(scope="session")
def docs():
    return common.corpus()


@pytest.fixture(scope="session")
def bank(model, docs):
    from msa_jax.memory.encoder import DocInput
    return model.encode_memory([DocInput(str(i), tuple(d)) for i, d in enumerate(docs)],
                               block_tokens=common.BLOCK_TOKENS, progress=False)


@pytest.fixture(scope="session")
def rows(docs):
    return common.question_rows(docs)


@pytest.fixture(scope="session")
def reference(model, bank, rows):
    """The single-device run (MemoryBank.view, local select and fetch)."""
    return common.run(model, bank, rows)
