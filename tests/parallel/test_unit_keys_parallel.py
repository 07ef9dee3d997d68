"""Unit routing keys in a memory-parallel view (`MemoryPlacement.view(unit_keys=True)`, as
`ask` builds it for a cosine-routing model): each shard's float32 rows, or an int8 tier's
scales, are normalised as the shard is filled, and also when documents are appended in place;
the answers are the single-device unit-key view's and the per-question normalisation's. A
bfloat16 tier stays as it is (normalised per question)."""

import dataclasses

import jax
import pytest

import msa_jax
from msa_jax.memory.encoder import DocInput
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from tests.parallel import common

BLOCK = common.BLOCK_TOKENS


@pytest.fixture(scope="module")
def cosine_model(model):
    cfg = model.cfg.replace(msa=dataclasses.replace(model.cfg.msa,
                                                    inference_score_mode="cosine"))
    assert cfg.msa.inference_cosine
    return msa_jax.MSAModel(cfg, model.params, model.tokenizer)


def _docs(docs):
    return [DocInput(str(i), tuple(d)) for i, d in enumerate(docs)]


def _placement():
    return MemoryPlacement(memory_mesh(1, jax.devices()[:4]))


@pytest.mark.parametrize("routing_dtype", [None, "int8"])
def test_unit_key_shards_give_the_same_answers(cosine_model, docs, rows, routing_dtype):
    bank = cosine_model.encode_memory(_docs(docs), block_tokens=BLOCK, progress=False,
                                      routing_dtype=routing_dtype)
    placement = _placement()
    assert placement.view(bank, unit_keys=True).unit_keys
    got = common.run(cosine_model, bank, rows, placement, unit_keys=True)
    where = f"routing {routing_dtype or 'float32'}"
    common.assert_same_result(common.run(cosine_model, bank, rows, unit_keys=True), got,
                              where=where + ", against one device")
    common.assert_same_result(common.run(cosine_model, bank, rows, placement), got,
                              where=where + ", against per-question normalisation")
    assert not placement.view(bank).unit_keys  # laid out again for the other scoring


@pytest.mark.parametrize("routing_dtype", [None, "int8"])
def test_appended_rows_are_normalised_too(cosine_model, docs, rows, routing_dtype):
    """Documents appended after the view was built are written into it in place, normalised:
    here rows that are not unit vectors (`MemoryBank.append` takes any rows)."""
    placement = _placement()
    bank = placement.encode(cosine_model.cfg, cosine_model.params, _docs(docs)[:39],
                            routing_dtype=routing_dtype, block_tokens=BLOCK)
    more = cosine_model.encode_memory(_docs(docs)[39:], block_tokens=BLOCK, progress=False)
    assert more.num_docs == len(docs) - 39  # no deleted slots: its rows are in slot order
    appended = placement.stats["appended"]
    bank.append(list(more.doc_ids), [more.doc_tokens.array(s) for s in range(more.num_docs)],
                list(more.doc_texts), list(more.doc_num_chunks),
                3.0 * more.tier("routing_keys"), more.tier("content_k"), more.tier("content_v"))
    view = placement.view(bank, unit_keys=True)
    assert placement.stats["appended"] == appended + 1 and view.unit_keys  # written in place
    assert placement.view(bank, unit_keys=True) is view  # cached
    common.assert_same_result(common.run(cosine_model, bank, rows, unit_keys=True),
                              common.run(cosine_model, bank, rows, placement, unit_keys=True),
                              where=f"appended, routing {routing_dtype or 'float32'}")


def test_a_bfloat16_tier_is_normalised_per_question(cosine_model, docs):
    bank = cosine_model.encode_memory(_docs(docs)[:12], block_tokens=BLOCK, progress=False,
                                      dtype="bfloat16")
    view = _placement().view(bank, unit_keys=True)
    assert not view.unit_keys and view.routing_keys[0].dtype == "bfloat16"
