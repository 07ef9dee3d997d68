"""The routing scan of a question scores only its routing-query tokens: the prompt's padding and
context tokens are compacted away before the scan, and the scores are those of the float64 oracle
on the unpadded routing tokens."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.inference.generate import fine_bucket
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, pack_rows, prefill_rows
from msa_jax.model.cache import step_times
from msa_jax.model.query import local_select, prefill_with_memory, prefix_cache
from tests.kernels.kernel_oracles import np_routing_doc_scores

# float32 scan against a float64 oracle: K*H = 32 products per chunk score
RTOL = ATOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    model = msa_jax.MSAModel.random(msa_jax.preset("tiny-msa", vocab_size=64), 0)
    rs = np.random.RandomState(0)
    bank = model.encode_memory([rs.randint(5, 64, n).tolist() for n in (9, 20, 13, 5, 30, 17)],
                               progress=False)
    rows = [QueryRow.build(([4], CONTEXT), (rs.randint(5, 64, 9).tolist(), ROUTING),
                           (rs.randint(5, 64, 20).tolist(), CONTEXT)),
            QueryRow.build((rs.randint(5, 64, 5).tolist(), ROUTING), ([4, 3, 1], CONTEXT))]
    return model, bank, rows


def with_msa(cfg, **kw):
    return cfg.replace(msa=dataclasses.replace(cfg.msa, **kw))


def test_fine_bucket():
    got = [fine_bucket(n) for n in (0, 1, 3, 5, 8, 9, 11, 16, 17, 33, 40, 41, 100)]
    assert got == [1, 1, 4, 8, 8, 9, 11, 16, 18, 36, 40, 44, 104]
    assert all(n <= fine_bucket(n) < 1.125 * n for n in range(9, 2000))


def test_pack_rows_counts_routing_tokens(setup):
    model, _, rows = setup
    packed = pack_rows(model.cfg, rows)
    assert packed.tokens.shape == (2, 32)  # 30 tokens, padded to a power of two
    np.testing.assert_array_equal(packed.routing.sum(1), [9, 5])
    assert packed.routing_rows == 9  # 9 routing tokens at most
    assert pack_rows(with_msa(model.cfg, query_reduce="last"), rows).routing_rows == 1


def test_scan_sees_only_routing_rows(setup):
    """The select hook (the scan's caller) gets the 9 routing rows, not the padded 32."""
    model, bank, rows = setup
    seen = []

    def select(cfg, memory, r, qr, mask):  # shapes are static: recorded while tracing
        seen.append((qr.shape, mask.shape))
        return local_select(cfg, memory, r, qr, mask)

    prefill_rows(model.cfg, model.params, bank.view(), jnp.asarray(bank.prefix_k),
                 jnp.asarray(bank.prefix_v), rows, 8, select=select)
    cfg = model.cfg
    assert seen == [((2, 9, cfg.num_heads, cfg.head_dim), (2, 9))] * len(cfg.msa.router_layers)


def _prefill(cfg, params, bank, rows, routing_rows, capture=None):
    packed = pack_rows(cfg, rows)
    tokens, mask = jnp.asarray(packed.tokens), jnp.asarray(packed.mask)

    def select(cfg_, memory, r, qr, rmask):
        if capture is not None:
            capture[r] = np.asarray(qr)
        return local_select(cfg_, memory, r, qr, rmask)

    cache = prefix_cache(cfg, jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v), len(rows),
                         bank.prefix_k.shape[1] + tokens.shape[1])
    k_time, q_time = step_times(cache.index, mask)
    rr = packed.routing_rows if routing_rows else None
    _, _, (infos, _) = prefill_with_memory(
        cfg, params, bank.view(), cache, tokens, jnp.asarray(packed.positions), k_time, q_time,
        jnp.asarray(packed.routing), select=select, keep_doc_scores=True, routing_rows=rr)
    return packed, [i for i in infos if i is not None]


def _oracle_mask(msa, routing: np.ndarray) -> np.ndarray:
    """The tokens each row reduces over, from msa.md §4 (left-padded rows)."""
    if msa.query_reduce != "last":
        return routing
    out = np.zeros_like(routing)
    for b, row in enumerate(routing):
        idx = np.flatnonzero(row)
        if msa.last_query_rule == "upstream":
            pick = len(idx) - 1  # index (#routing tokens - 1) of the padded row
            out[b, pick] = pick >= 0 and row[pick]
        else:
            out[b, idx[-1]] = True
    return out


@pytest.mark.parametrize("reduce", [("mean", "max"), ("mean", "mean"), ("max", "max"),
                                    ("mean", "last", "routing_token"), ("mean", "last", "upstream")],
                         ids="-".join)
def test_compacted_scores_match_oracle(setup, reduce):
    model, bank, rows = setup
    head, query, *rule = reduce
    cfg = with_msa(model.cfg, head_reduce=head, query_reduce=query,
                   **({"last_query_rule": rule[0]} if rule else {}))
    full_qr = {}
    packed, full = _prefill(cfg, model.params, bank, rows, False, capture=full_qr)
    _, compact = _prefill(cfg, model.params, bank, rows, True)
    mask = _oracle_mask(cfg.msa, packed.routing)
    m = bank.num_slots
    for r, (a, b) in enumerate(zip(full, compact)):
        want = np_routing_doc_scores(
            full_qr[r], mask, bank.tier("routing_keys")[r], bank.chunk_doc, m, "dot",
            cfg.head_dim ** -0.5, head, "max" if query == "last" else query, cfg.msa.chunk_reduce)
        got = np.asarray(b.doc_scores)[:, :m]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"router slot {r}")
        np.testing.assert_allclose(got, np.asarray(a.doc_scores)[:, :m], rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(np.asarray(b.doc_ids), np.asarray(a.doc_ids))
