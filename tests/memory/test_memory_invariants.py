"""Invariants of stage 1 and stage 2 (docs/msa.md §3-§4) on a tiny random MSA model."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, prefill_rows
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.model.cache import MemoryKV, step_times
from msa_jax.model.decode import forward_step, logits_of
from msa_jax.model.query import prefix_cache
from tests.tolerances import F32_REASSOC


@pytest.fixture(scope="module")
def model():
    cfg = msa_jax.preset("tiny-msa", vocab_size=64)
    return cfg, msa_jax.MSAModel.random(cfg, 0).params


@pytest.fixture(scope="module")
def docs():
    rs = np.random.RandomState(0)
    lengths = [5, 17, 8, 30, 1, 12, 9, 24]  # partial chunks, a 1-token document
    return [DocInput(f"doc{i}", tuple(rs.randint(5, 64, n).tolist())) for i, n in
            enumerate(lengths)]


def pooled_by_doc(bank):
    out = {}
    for s in bank.live_slots():
        off, n = bank.doc_chunk_offset[s], bank.doc_num_chunks[s]
        out[bank.doc_ids[s]] = [bank.tier(t)[:, off:off + n]
                                for t in ("routing_keys", "content_k", "content_v")]
    return out


def test_pooled_chunks_do_not_depend_on_block_or_position(model, docs):
    cfg, params = model
    packed = pooled_by_doc(encode_documents(cfg, params, docs, show_progress=False))
    reversed_small = pooled_by_doc(encode_documents(cfg, params, docs[::-1], block_tokens=32,
                                                    show_progress=False))
    for d in docs[:3]:
        alone = pooled_by_doc(encode_documents(cfg, params, [d], show_progress=False))[d.id]
        for a, b in zip(alone, packed[d.id]):
            np.testing.assert_allclose(a, b, **F32_REASSOC)
    for key, tensors in packed.items():
        for a, b in zip(tensors, reversed_small[key]):
            np.testing.assert_allclose(a, b, **F32_REASSOC)


def test_partial_last_chunk_averages_its_own_tokens(model, docs):
    cfg, params = model
    bank = encode_documents(cfg, params, docs, show_progress=False)
    p = cfg.msa.pooling_size
    assert bank.doc_num_chunks == [-(-len(d.tokens) // p) for d in docs]


def _dense_memory_logits(cfg, params, bank, tokens, positions, mask, order):
    """Every router layer attends to ALL pooled chunks (no router), in `order`."""
    b = tokens.shape[0]
    view = bank.view()
    cache = prefix_cache(cfg, jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v), b,
                         bank.prefix_k.shape[1] + tokens.shape[1])
    layers = []
    for i, layer in enumerate(cache.layers):
        if cfg.is_router_layer(i):
            r = cfg.msa.router_index(i)
            k = jnp.broadcast_to(view.content_k[r][order], (b,) + view.content_k[r][order].shape)
            v = jnp.broadcast_to(view.content_v[r][order], k.shape)
            valid = jnp.broadcast_to(view.chunk_doc[order] >= 0, (b, len(order)))
            layer = layer.replace(memory=MemoryKV(k, v, valid))
        layers.append(layer)
    cache = cache.replace(layers=tuple(layers))
    k_time, q_time = step_times(cache.index, mask)
    h, _, _ = forward_step(cfg, params, cache, tokens, positions, k_time, q_time)
    return np.asarray(logits_of(cfg, params, h))[:, -1]


def _rows():
    return [QueryRow.build(([7, 8, 9, 10, 11], ROUTING), ([4, 3, 1], CONTEXT)),
            QueryRow.build(([12, 13, 14], ROUTING), ([4, 3, 1], CONTEXT))]


def test_topk_covering_every_document_equals_dense_attention(model, docs):
    cfg, params = model
    cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, top_k_docs=len(docs) + 3))
    bank = encode_documents(cfg, params, docs, show_progress=False)
    pre = prefill_rows(cfg, params, bank.view(), jnp.asarray(bank.prefix_k),
                       jnp.asarray(bank.prefix_v), _rows(), 8)
    for row in pre.choices:  # top-k larger than the bank: every document, once
        for choice in row:
            assert sorted(choice.docs) == list(range(len(docs)))
    rows = _rows()
    length = 16
    tokens = np.zeros((2, length), np.int32)
    mask = np.zeros((2, length), np.int32)
    for i, r in enumerate(rows):
        tokens[i, length - len(r.tokens):] = r.tokens
        mask[i, length - len(r.tokens):] = 1
    positions = cfg.msa.query_offset + np.maximum(np.cumsum(mask, 1) - 1, 0)
    n = bank.view().chunk_doc.shape[0]
    dense = _dense_memory_logits(cfg, params, bank, jnp.asarray(tokens),
                                 jnp.asarray(positions, jnp.int32), jnp.asarray(mask),
                                 np.arange(n))
    np.testing.assert_allclose(np.asarray(pre.logits), dense, **F32_REASSOC)
    shuffled = _dense_memory_logits(cfg, params, bank, jnp.asarray(tokens),
                                    jnp.asarray(positions, jnp.int32), jnp.asarray(mask),
                                    np.random.RandomState(1).permutation(n))
    np.testing.assert_allclose(shuffled, dense, **F32_REASSOC)


def test_router_layers_choose_independently_and_deleted_documents_are_never_chosen(model, docs):
    cfg, params = model
    bank = encode_documents(cfg, params, docs, show_progress=False)
    view = bank.view()
    pre = prefill_rows(cfg, params, view, jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v),
                       _rows(), 8)
    first = pre.choices[0][0].docs[0]
    gone = bank.doc_ids[first]
    bank.delete([gone])
    pre2 = prefill_rows(cfg, params, bank.view(), jnp.asarray(bank.prefix_k),
                        jnp.asarray(bank.prefix_v), _rows(), 8)
    for row in pre2.choices:
        for choice in row:
            assert first not in choice.docs
            assert len(choice.docs) == cfg.msa.top_k_docs
