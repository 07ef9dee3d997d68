"""Invariants of stage 1 and stage 2 (docs/msa.md §3-§4) on a tiny random MSA model."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, prefill_rows
from msa_jax.memory import encoder as encoder_mod
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.model.cache import MemoryKV, step_times
from msa_jax.model.decode import forward_step, logits_of
from msa_jax.model.encode import _prefix_forward
from msa_jax.model.pooling import document_chunk_ids, pool_chunks
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


def test_blocks_spread_over_devices_give_the_same_bank(model, docs, monkeypatch):
    """Blocks encoded round-robin on 3 devices (tests run with 8 CPU devices) and appended in
    corpus order: the same documents, order and chunks as on one device; 'local' spreads over
    every device; sharded params keep JAX's placement; a bad `devices` is refused."""
    import jax

    from msa_jax.memory.bank import BankError
    from msa_jax.memory.encoder import encode_devices

    cfg, params = model
    one = encode_documents(cfg, params, docs, block_tokens=32, show_progress=False)
    real, used = encoder_mod._dispatch, []

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        used.append(next(iter(out.content_v.devices())))
        return out

    monkeypatch.setattr(encoder_mod, "_dispatch", record)
    spread = encode_documents(cfg, params, docs, block_tokens=32, show_progress=False,
                              devices=jax.devices()[:3])
    assert used == [jax.devices()[i % 3] for i in range(len(used))] and len(used) > 3
    assert spread.doc_ids == one.doc_ids
    a, b = pooled_by_doc(one), pooled_by_doc(spread)
    for key in a:
        for x, y in zip(a[key], b[key]):
            np.testing.assert_allclose(x, y, **F32_REASSOC)
    assert encode_devices(params, "local") == jax.local_devices()
    assert encode_devices(params) == [None]
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("d",))
    sharded = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    assert encode_devices(sharded, "local") == [None]
    with pytest.raises(BankError, match="devices="):
        encode_devices(params, "all")
    with pytest.raises(BankError, match="devices is empty"):
        encode_devices(params, [])


def test_blocks_padded_to_a_quarter_block_give_the_same_bank(model, docs, monkeypatch):
    """On the XLA path a block is padded to a multiple of a quarter block, not to the full
    block: the same chunks as full-length blocks, in at most 4 block shapes."""
    from msa_jax.memory.layout import LayoutError, make_block

    block = make_block([d.tokens for d in docs[:3]], 0, 512, 8, 128)  # 30 tokens
    assert block.tokens.shape == (128,) and block.num_tokens == 30
    assert make_block([d.tokens for d in docs], 0, 512, 8, 128).tokens.shape == (128,)  # 106
    assert make_block([(1,) * 130], 0, 512, 8, 128).tokens.shape == (256,)
    assert make_block([d.tokens for d in docs[:3]], 0, 512, 8).tokens.shape == (512,)
    with pytest.raises(LayoutError, match="do not fit"):
        make_block([(1,) * 300, (2,) * 300], 0, 512, 8, 128)
    cfg, params = model
    many = [DocInput(f"m{i}", tuple(np.random.RandomState(i).randint(5, 64, 40 + 7 * i)))
            for i in range(30)]
    shapes = []
    real = encoder_mod._dispatch
    monkeypatch.setattr(encoder_mod, "_dispatch", lambda cfg, p, block, *a, **k: (
        shapes.append(block.tokens.shape[0]) or real(cfg, p, block, *a, **k)))
    short = pooled_by_doc(encode_documents(cfg, params, many, block_tokens=512,
                                           show_progress=False))
    assert set(shapes) <= {128, 256, 384, 512} and len(set(shapes)) > 1
    monkeypatch.setattr(encoder_mod, "_length_multiple", lambda cfg, block_tokens: None)
    full = pooled_by_doc(encode_documents(cfg, params, many, block_tokens=512,
                                          show_progress=False))
    for key in full:
        for x, y in zip(short[key], full[key]):
            np.testing.assert_allclose(x, y, **F32_REASSOC)


def test_partial_last_chunk_averages_its_own_tokens(model, docs):
    cfg, params = model
    bank = encode_documents(cfg, params, docs, show_progress=False)
    p = cfg.msa.pooling_size
    assert bank.doc_num_chunks == [-(-len(d.tokens) // p) for d in docs]


def np_pooled(x: np.ndarray, pool: int) -> np.ndarray:
    """Oracle: [n, ...] one document's tokens -> [ceil(n / P), ...] means of P tokens, the last
    chunk averaging only the tokens it has (float64)."""
    return np.stack([x[i:i + pool].astype(np.float64).mean(0) for i in range(0, len(x), pool)])


@pytest.mark.parametrize("lengths,start", [([5], 0), ([1, 8, 9], 3), ([17, 4, 15, 2], 1),
                                           ([7, 16, 1], 11)])
def test_pool_chunks_partial_last_chunk_against_numpy(lengths, start):
    """Documents packed from `start` (padding before and after), document-wise positions."""
    pool, width = 8, 64
    rs = np.random.RandomState(sum(lengths) + start)
    x = rs.randn(1, width, 2, 3).astype(np.float32)  # [B, L, K, H]
    segment = np.full((1, width), -1, np.int32)
    positions = np.zeros((1, width), np.int32)
    at, spans = start, []
    for d, n in enumerate(lengths):
        segment[0, at:at + n], positions[0, at:at + n] = d, np.arange(n)
        spans.append((at, n))
        at += n
    counts = [-(-n // pool) for n in lengths]
    offset = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    ids = document_chunk_ids(jnp.asarray(segment), jnp.asarray(positions), pool,
                             jnp.asarray(offset))
    got = np.asarray(pool_chunks(jnp.asarray(x), ids, sum(counts) + 2))  # 2 chunks nobody fills
    for (a, n), o, c in zip(spans, offset, counts):
        np.testing.assert_allclose(got[o:o + c], np_pooled(x[0, a:a + n], pool), rtol=1e-6,
                                   atol=1e-6)  # float32 mean of <= 8 values vs float64
    np.testing.assert_array_equal(got[sum(counts):], 0)


def test_encoded_chunks_use_document_wise_positions(model, docs):
    """The bank's pooled K, V of each document (packed at some offset into 64-token blocks) equal
    the numpy mean of the keys and values of a plain causal forward of that document alone at
    positions 0..n-1 (RoPE makes keys position-dependent: any offset, constant or per block,
    fails). Keys are after k_norm and RoPE, as the KV cache holds them."""
    cfg, params = model
    cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, prefix_token_ids=()))  # no prefix needed
    bank = pooled_by_doc(encode_documents(cfg, params, docs, block_tokens=64,
                                          show_progress=False))
    pool = cfg.msa.pooling_size
    for d in docs:
        cache = _prefix_forward(cfg, params, jnp.asarray([d.tokens], jnp.int32))
        for r, layer in enumerate(cfg.msa.router_layers):
            for got, kv in zip(bank[d.id][1:], (cache.layers[layer].k, cache.layers[layer].v)):
                np.testing.assert_allclose(got[r], np_pooled(np.asarray(kv[0]), pool),
                                           err_msg=f"{d.id} layer {layer}", **F32_REASSOC)


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
