"""Sharded routing (local top-k per shard, gathered, global top-k) against top-k over the whole
bank, on scores with exact ties; and fetching the selected chunks from the host content tier."""

import dataclasses

import jax
import numpy as np
import pytest

import msa_jax
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from msa_jax.model.query import local_fetch, local_select
from msa_jax.model.router import select_documents, selected_chunks
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


# Document scores (x H^-0.5) with a tie straddling the k-th place (k = 6): 5, 5, 4 are in, then
# slots 1, 3, 4, 6, 9, 12, 14 all score 3 and only the three lowest of them fit.
VALUES = [1, 3, 5, 3, 3, 0, 3, 2, 5, 3, 4, 2, 3, 1, 3]
CHUNKS = [1, 2, 1, 1, 3, 1, 2, 1, 1, 1, 2, 1, 1, 2, 1]


def test_select_documents_tie_at_the_kth_place_goes_to_the_lower_slots():
    scores = np.asarray([VALUES, VALUES[::-1]], np.float32)
    scores[1, 2] = -np.inf  # an absent document
    ids, top, valid = (np.asarray(x) for x in select_documents(scores, 6))
    for b in range(2):
        want = common.np_topk(scores[b], 6)
        assert np.sort(scores[b])[::-1][5] == np.sort(scores[b])[::-1][6]  # the tie straddles k
        np.testing.assert_array_equal(ids[b], want)
        np.testing.assert_array_equal(top[b], scores[b][want])
    assert valid.all()


@pytest.mark.parametrize("data,memory", [(1, 1), (1, 4), (2, 4)])
def test_sharded_select_tie_at_the_kth_place_matches_the_oracle(data, memory):
    cfg = msa_jax.preset("tiny-msa")
    cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, top_k_docs=6, inference_score_mode="dot"))
    bank = common.valued_bank(VALUES, CHUNKS)
    bank.delete(["3"])  # a tombstone inside the tie: the next tied slot takes its place
    qr, mask = common.one_hot_queries(batch=2 * data)
    placement = MemoryPlacement(memory_mesh(data, jax.devices()[:data * memory]))
    want_scores = np.asarray(VALUES, np.float32) * 16 ** -0.5
    want_scores[3] = -np.inf
    want = common.np_topk(want_scores, 6)  # slots 2, 8, 10, 1, 4, 6
    assert 3 not in want and 9 not in want and set(want[3:]) == {1, 4, 6}
    got = [np.asarray(x) for x in _route(cfg, placement.view(bank), qr, mask, placement.select,
                                         placement.fetch)]
    for b in range(qr.shape[0]):
        np.testing.assert_array_equal(got[0][b], want)
        np.testing.assert_array_equal(got[1][b], want_scores[want])  # exact: see valued_bank
        assert got[2][b].all()
