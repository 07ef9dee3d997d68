"""Tier precision: float32, bfloat16 and int8 routing tiers. Quantisation against a numpy oracle
written element by element; save/load round trips of each dtype; a format-2 bank (no routing
dtype) still loads; unknown dtypes refused by name; an int8 bank routes as the float32 scan of its
dequantised keys."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax.errors import BankError
from msa_jax.memory.bank import SCALE
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.memory.quantize import dequantize_int8, quantize_int8
from msa_jax.memory.store import load_bank, save_bank
from msa_jax.model.query import MemoryView, local_select
from tests.models import byte_model
from tests.tolerances import F32_REASSOC

R, K, H = 2, 2, 4


def _oracle(row):
    """One row [H]: symmetric int8 with scale max|x| / 127, round half to even (Python's round)."""
    scale = np.float32(max(abs(float(v)) for v in row)) / np.float32(127)
    if scale == 0:
        return [0] * len(row), np.float32(0)
    return [max(-127, min(127, round(float(np.float32(v) / scale)))) for v in row], scale


def test_quantize_matches_the_oracle_and_bounds_the_error():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 3, 2, 16)) * rng.uniform(0.01, 10, (5, 3, 2, 1))).astype(
        np.float32)
    x[1, 2, 0] = 0.0  # an all-zero head
    x[2, 0, 1, 3] = 1e-30  # a subnormal-sized head maximum
    q, scale = quantize_int8(x)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (5, 3, 2)
    for idx in np.ndindex(*x.shape[:-1]):
        want_q, want_s = _oracle(x[idx])
        assert q[idx].tolist() == want_q and scale[idx] == want_s, idx
    back = dequantize_int8(q, scale)
    assert np.array_equal(back, q.astype(np.float32) * scale[..., None])
    assert np.all(np.abs(back - x) <= scale[..., None] / 2 * (1 + 1e-6) + 1e-37)
    assert np.abs(q).max() == 127  # every nonzero head uses the full range


def _docs(n=6):
    rng = np.random.default_rng(1)
    return [list(rng.integers(1, 250, rng.integers(20, 70))) for _ in range(n)]


@pytest.fixture(scope="module")
def model():
    return byte_model()


@pytest.mark.parametrize("dtype, routing", [("float32", None), ("bfloat16", None),
                                            ("float32", "int8"), ("bfloat16", "int8"),
                                            ("float32", "bfloat16")])
def test_save_load_round_trip(model, tmp_path, dtype, routing):
    bank = model.encode_memory(_docs(), dtype=dtype, routing_dtype=routing, progress=False)
    want = np.dtype(jnp.dtype(routing or dtype))
    assert bank.rows("routing_keys").dtype == want
    assert bank.rows("content_k").dtype == np.dtype(jnp.dtype(dtype))
    assert (SCALE in bank.spec.arrays) == (routing == "int8")
    path = save_bank(bank, str(tmp_path / "bank"))
    assert os.path.isfile(os.path.join(path, "routing_scale.bin")) == (routing == "int8")
    loaded = load_bank(path)
    assert loaded.spec == bank.spec
    for name in bank.spec.arrays:  # data movement: bit-exact
        a, b = bank.rows(name), loaded.rows(name)
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name
    bank.delete([bank.doc_ids[1]])  # a rewrite (compacting save) keeps the scales in step
    bank.compact()
    again = load_bank(save_bank(bank, str(tmp_path / "compacted")))
    for name in bank.spec.arrays:
        assert np.array_equal(again.rows(name).view(np.uint8), bank.rows(name).view(np.uint8))


def test_int8_appended_in_place(model, tmp_path):
    docs = [DocInput(f"d{i}", tuple(map(int, t))) for i, t in enumerate(_docs(8))]
    enc = lambda docs, **kw: encode_documents(model.cfg, model.params, docs,  # noqa: E731
                                              show_progress=False, **kw)
    path = save_bank(enc(docs[:4], routing_dtype="int8"), str(tmp_path / "bank"))
    bank = load_bank(path)
    enc(docs[4:], bank=bank)
    save_bank(bank, path, overwrite=True)  # appended: new rows of routing_scale.bin too
    with open(os.path.join(path, "manifest.json")) as f:
        assert len(json.load(f)["segments"]) == 2  # an append in place, not a rewrite
    loaded = load_bank(path)
    assert loaded.num_chunks == bank.num_chunks and loaded.spec.quantized
    for name in bank.spec.arrays:  # data movement: bit-exact
        assert np.array_equal(loaded.rows(name), bank.rows(name)), name


def test_a_format2_bank_still_loads(model, tmp_path):
    """Format 2 is format 3 without `routing_dtype` in the spec and without routing_scale.bin."""
    bank = model.encode_memory(_docs(), progress=False)
    path = save_bank(bank, str(tmp_path / "bank"))
    where = os.path.join(path, "manifest.json")
    with open(where) as f:
        m = json.load(f)
    m["format_version"] = 2
    del m["spec"]["routing_dtype"]
    with open(where, "w") as f:
        json.dump(m, f)
    loaded = load_bank(path)
    assert loaded.spec == bank.spec and not loaded.spec.quantized
    assert np.array_equal(loaded.rows("routing_keys"), bank.rows("routing_keys"))


def test_unknown_dtypes_are_refused(model, tmp_path):
    with pytest.raises(BankError, match="routing_dtype 'int4' is not one of"):
        model.encode_memory(_docs(1), routing_dtype="int4", progress=False)
    with pytest.raises(BankError, match=r"tier dtype 'int8' .*routing tier only"):
        model.encode_memory(_docs(1), dtype="int8", progress=False)
    path = save_bank(model.encode_memory(_docs(1), progress=False), str(tmp_path / "bank"))
    where = os.path.join(path, "manifest.json")
    with open(where) as f:
        m = json.load(f)
    m["spec"]["routing_dtype"] = "uint4"
    with open(where, "w") as f:
        json.dump(m, f)
    with pytest.raises(BankError, match=r"manifest\.json, spec: .*routing_dtype 'uint4'"):
        load_bank(path)


def test_int8_bank_routes_as_the_float_scan_of_its_dequantised_keys(model):
    cfg = model.cfg
    bank = model.encode_memory(_docs(40), routing_dtype="int8", progress=False)
    view = bank.view()
    deq = tuple(jnp.asarray(dequantize_int8(np.asarray(k), np.asarray(s)))
                for k, s in zip(view.routing_keys, view.routing_scale))
    float_view = MemoryView(deq, view.content_k, view.content_v, view.chunk_doc,
                            view.doc_chunk_offset, view.doc_num_chunks, None,
                            max_doc_chunks=view.max_doc_chunks)
    rng = np.random.default_rng(2)
    n, h = cfg.num_heads, cfg.head_dim
    qr = jnp.asarray(rng.standard_normal((2, 5, n, h)), jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for r in range(len(cfg.msa.router_layers)):
        got = local_select(cfg, view, r, qr, mask)
        want = local_select(cfg, float_view, r, qr, mask)
        np.testing.assert_allclose(np.asarray(got.doc_scores), np.asarray(want.doc_scores),
                                   **F32_REASSOC)
