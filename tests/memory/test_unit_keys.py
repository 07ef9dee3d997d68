"""Unit routing keys in a bank's view (`MemoryBank.view(unit_keys=True)`, memory/unit_keys.py):
the scan then scores cosine as a dot product with keys normalised once. The same documents are
chosen and the scores agree with per-question normalisation (float32 tolerance), for float32
and int8 tiers and for appended rows that are not unit vectors; a bfloat16 tier is viewed as
float32 unit keys on CPU."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import msa_jax
from msa_jax.memory.quantize import dequantize_int8, quantize_int8
from msa_jax.memory.unit_keys import unit_rows, unit_scales
from msa_jax.model.query import local_select
from tests.models import byte_model
from tests.tolerances import F32_REASSOC

EPS = 1e-6


@pytest.fixture(scope="module")
def model():
    m = byte_model()
    cfg = m.cfg.replace(msa=dataclasses.replace(m.cfg.msa, inference_score_mode="cosine"))
    assert cfg.msa.inference_cosine
    return msa_jax.MSAModel(cfg, m.params, m.tokenizer)


def _docs(n, seed=1):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, 250, rng.integers(20, 90))) for _ in range(n)]


def test_unit_rows_and_scales_give_unit_heads():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, 2, 3, 8)) * rng.uniform(0.1, 5, (7, 2, 3, 1))).astype(np.float32)
    x[2, 1, 0] = 0.0  # an all-zero head stays zero (norm floored at EPS)
    out = np.empty_like(x)
    unit_rows(x, out, EPS)
    want = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)
    np.testing.assert_allclose(out, want, **F32_REASSOC)
    assert np.all(out[2, 1, 0] == 0)
    q, s = quantize_int8(x)
    scales = np.empty_like(s)
    unit_scales(q, s, scales, EPS)
    deq = dequantize_int8(q, s)
    want = deq / np.maximum(np.linalg.norm(deq, axis=-1, keepdims=True), EPS)
    np.testing.assert_allclose(dequantize_int8(q, scales), want, **F32_REASSOC)


def _selects(cfg, plain, unit, seed=2):
    rng = np.random.default_rng(seed)
    qr = jnp.asarray(rng.standard_normal((2, 5, cfg.num_heads, cfg.head_dim)), jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for r in range(len(cfg.msa.router_layers)):
        got, want = local_select(cfg, unit, r, qr, mask), local_select(cfg, plain, r, qr, mask)
        np.testing.assert_allclose(np.asarray(got.doc_scores), np.asarray(want.doc_scores),
                                   **F32_REASSOC)
        np.testing.assert_array_equal(np.asarray(got.doc_ids), np.asarray(want.doc_ids))


@pytest.mark.parametrize("routing_dtype", [None, "int8"])
def test_unit_view_routes_as_per_question_normalisation(model, routing_dtype):
    bank = model.encode_memory(_docs(40), routing_dtype=routing_dtype, progress=False)
    unit = bank.view(unit_keys=True)
    assert unit.unit_keys and not bank.view().unit_keys
    _selects(model.cfg, bank.view(), unit)


def test_unit_view_normalises_rows_appended_as_they_are(model):
    """MemoryBank.append takes any float rows: the view, not the encoder, makes them unit."""
    bank = model.encode_memory(_docs(3), progress=False)
    rng = np.random.default_rng(3)
    shape = bank.spec.chunk_shape(12)
    rows = [(rng.standard_normal(shape) * 7).astype(np.float32) for _ in range(3)]
    bank.append(["a", "b", "c"], [[5] * 40, [6] * 30, [7] * 20], [None] * 3, [5, 4, 3], *rows)
    _selects(model.cfg, bank.view(), bank.view(unit_keys=True))


def test_bfloat16_tier_is_viewed_as_float32_unit_keys_on_cpu(model):
    """XLA:CPU scans bfloat16 ~8x slower than float32, and bfloat16 cannot hold unit vectors
    exactly: on CPU the view holds the tier upcast (exactly) and normalised, and routes as the
    per-question normalisation of the upcast keys. (The bfloat16 scan itself rounds the query
    to bfloat16 too, so it differs from both by ~0.4 %.)"""
    bank = model.encode_memory(_docs(40), dtype="bfloat16", progress=False)
    unit, plain = bank.view(unit_keys=True), bank.view()
    assert unit.unit_keys and unit.routing_keys[0].dtype == jnp.float32
    assert plain.routing_keys[0].dtype == jnp.bfloat16 and unit.content_k[0].dtype == jnp.bfloat16
    upcast = plain.replace(routing_keys=tuple(k.astype(jnp.float32) for k in plain.routing_keys))
    _selects(model.cfg, upcast, unit)
