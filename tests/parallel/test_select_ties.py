"""Sharded routing (local top-k per shard, gathered, global top-k) against top-k over the whole
bank, on scores with exact ties; and fetching the selected chunks from the host content tier."""

import dataclasses

import jax
import numpy as np
import pytest

import msa_jax
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from msa_jax.model.query import local_fetch, local_select
from msa_jax.model.router import selected_chunks
from tests.parallel import common

MESHES = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 4)]


@pytest.fixture(scope="module")
def cfg():
    base = msa_jax.preset("tiny-msa")
    return base.replace(msa=dataclasses.replace(base.msa, top_k_docs=6))


def route(cfg, view, qr, mask, select, fetch):
    info = select(cfg, view, 0, qr, mask)
    idx, ok = selected_chunks(info.doc_ids, info.valid, view.doc_chunk_offset,
                              view.doc_num_chunks, view.max_doc_chunks)
    k, v = fetch(view, 0, idx)
    return info.doc_ids, info.scores, info.valid, k, v, ok


_route = jax.jit(route, static_argnames=("cfg", "select", "fetch"))


def expected(cfg, bank, qr, mask):
    return [np.asarray(x) for x in _route(cfg, bank.view(), qr, mask, local_select, local_fetch)]


def check(cfg, bank, placement, qr, mask):
    want = expected(cfg, bank, qr, mask)
    got = [np.asarray(x) for x in _route(cfg, placement.view(bank), qr, mask, placement.select,
                                         placement.fetch)]
    ids, scores, valid, k, v, ok = want
    np.testing.assert_array_equal(got[2], valid)
    np.testing.assert_array_equal(np.where(valid, got[0], -1), np.where(valid, ids, -1))
    np.testing.assert_array_equal(got[1], scores)  # bit-equal: integer arithmetic
    np.testing.assert_array_equal(got[5], ok)
    for a, b in ((got[3], k), (got[4], v)):  # the fetched chunks, where valid
        np.testing.assert_array_equal(np.where(ok[..., None, None], a, 0),
                                      np.where(ok[..., None, None], b, 0))
    return want


@pytest.mark.parametrize("data,memory", MESHES)
def test_sharded_select_breaks_ties_like_one_device(cfg, data, memory):
    bank = common.synthetic_bank(29)
    qr, mask = common.integer_queries(batch=4 if data > 1 else 3)
    placement = MemoryPlacement(memory_mesh(data, jax.devices()[:data * memory]))
    ids, scores, valid, *_ = check(cfg, bank, placement, qr, mask)
    assert not valid[1].any()  # a row without routing tokens selects nothing
    tied = [np.unique(s[v], return_counts=True)[1].max(initial=0) for s, v in zip(scores, valid)]
    assert max(tied) > 1, "the synthetic bank should produce tied scores"


def test_deleted_documents_are_never_selected(cfg):
    bank = common.synthetic_bank(29)
    qr, mask = common.integer_queries()
    placement = MemoryPlacement(memory_mesh(1, jax.devices()[:4]))
    ids, _, valid, *_ = check(cfg, bank, placement, qr, mask)
    gone = sorted({str(i) for i in ids[valid][:3]})
    bank.delete(gone)  # not an append: the view is rebuilt
    ids, _, valid, *_ = check(cfg, bank, placement, qr, mask)
    assert not set(gone) & {str(i) for i in ids[valid]}
    assert placement.stats == {"built": 2, "appended": 0}
