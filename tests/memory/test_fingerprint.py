"""A bank (and an encoding journal) is only read by the model that wrote it.

Models that differ from the encoder in one value of one weight are refused by `ask`, by append
and by journal resume, also after save/load; the digest is checked against a numpy oracle.
"""

import jax
import numpy as np
import pytest

import msa_jax
from msa_jax.memory import fingerprint as fp
from tests.models import byte_model

DOCS = {"sky": "The sky of Vega is red.", "sea": "The sea of Vega is green.",
        "sun": "The sun of Tau is blue."}
# One element each, at flat index 1: the old fingerprint sampled k_proj / k_norm / router_k_proj
# at flat indices 0, 97, ... only, so none of these changes was seen.
VARIANTS = {
    "v_proj of layer 0": ("layers_0", "self_attn", "v_proj", "kernel"),
    "an MLP weight": ("layers_1", "mlp", "down_proj", "kernel"),
    "q_norm": ("layers_2", "self_attn", "q_norm", "scale"),
    "the embedding": ("embed_tokens", "embedding"),
    "a router projection": ("layers_3", "self_attn", "router_k_proj", "kernel"),
}


def tiny_model(seed: int = 0) -> msa_jax.MSAModel:
    return byte_model(seed=seed, router_layers=(2, 3), pooling_size=8, top_k_docs=2)


def with_one_change(model: msa_jax.MSAModel, path: tuple[str, ...]) -> msa_jax.MSAModel:
    """The same model, one value of the weight at `path` nudged."""
    params = jax.tree.map(lambda x: x, model.params)  # new containers, same arrays
    node = params
    for key in path[:-1]:
        node = node[key]
    flat = np.array(node[path[-1]]).reshape(-1)
    flat[1] += 1e-3
    node[path[-1]] = jax.numpy.asarray(flat.reshape(node[path[-1]].shape))
    return msa_jax.MSAModel(model.cfg, params, model.tokenizer)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Model A, its bank (in memory and saved) and its journal."""
    root = tmp_path_factory.mktemp("fingerprint")
    model = tiny_model()
    journal = str(root / "journal")
    bank = model.encode_memory(DOCS, journal=journal, progress=False)
    saved = msa_jax.save_bank(bank, str(root / "bank"))
    return model, bank, saved, journal


@pytest.mark.parametrize("what", list(VARIANTS))
def test_a_model_differing_in_one_weight_is_refused(encoded, what):
    model, bank, saved, journal = encoded
    other = with_one_change(model, VARIANTS[what])
    assert other.fingerprint != model.fingerprint
    for b in (bank, msa_jax.load_bank(saved)):
        with pytest.raises(msa_jax.BankError, match="memory bank was made by another model"):
            other.ask("What colour is the sky?", b, interleave=False, answer_tokens=2)
        with pytest.raises(msa_jax.BankError, match="appending would mix"):
            other.encode_memory({"moon": "The moon is grey."}, bank=b, progress=False)
    with pytest.raises(msa_jax.BankError, match=f"journal {journal} was made by another model"):
        other.encode_memory(DOCS, journal=journal, progress=False)


def test_the_encoder_itself_is_accepted_after_a_checkpoint_round_trip(encoded, tmp_path):
    model, bank, saved, journal = encoded
    model.save_pretrained(str(tmp_path / "ckpt"))
    reloaded = msa_jax.from_pretrained(str(tmp_path / "ckpt"))
    assert reloaded.fingerprint == model.fingerprint
    reloaded.check_bank(msa_jax.load_bank(saved))
    again = reloaded.encode_memory(DOCS, journal=journal, progress=False)  # resumes
    assert again.doc_ids == bank.doc_ids


def test_weights_no_stored_tensor_depends_on_are_not_hashed(encoded):
    model, bank, _, _ = encoded
    model.check_bank(bank)
    with_one_change(model, ("norm", "scale")).check_bank(bank)  # the final norm


@pytest.mark.parametrize("change", [dict(rope_theta=20000.0), dict(rms_norm_eps=1e-5)])
def test_settings_that_shape_the_tiers_change_the_fingerprint(encoded, change):
    model = encoded[0]
    assert fp.model_fingerprint(model.cfg.replace(**change), model.params) != model.fingerprint


@pytest.mark.parametrize("change", [dict(pooling_size=4), dict(prefix_token_ids=(1, 2)),
                                    dict(aux_loss_method="INFONCE"), dict(router_layers=(3,)),
                                    dict(rewrite_position=False)])
def test_msa_settings_that_shape_the_tiers_change_the_fingerprint(encoded, change):
    import dataclasses

    model = encoded[0]
    cfg = model.cfg.replace(msa=dataclasses.replace(model.cfg.msa, **change))
    assert fp.model_fingerprint(cfg, model.params) != model.fingerprint


def test_bfloat16_weights_hash_as_their_float32_values(encoded):
    model = encoded[0]
    half = jax.tree.map(lambda x: x.astype("bfloat16"), model.params)
    widened = jax.tree.map(lambda x: x.astype("float32"), half)  # exact
    cfg = model.cfg
    assert fp.model_fingerprint(cfg, half) == fp.model_fingerprint(cfg, widened)
    assert fp.model_fingerprint(cfg, half) != model.fingerprint  # rounded: other weights


def test_replacing_the_params_of_a_model_updates_its_fingerprint(encoded):
    model = encoded[0]
    copy = msa_jax.MSAModel(model.cfg, model.params, model.tokenizer)
    before = copy.fingerprint
    copy.params = with_one_change(model, VARIANTS["the embedding"]).params
    assert copy.fingerprint != before


def _numpy_digest(x: np.ndarray) -> np.ndarray:
    """Oracle of fingerprint._digest, written from its docstring with numpy uint64 arithmetic."""
    m = (1 << 32) - 1

    def fmix(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & m
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & m
        return h ^ (h >> 16)

    bits = np.asarray(x, np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    idx = np.arange(bits.size, dtype=np.uint64)
    h = fmix((bits + idx * 0x9E3779B9) & m)
    lanes = [h] + [fmix(h ^ s) for s in (0x7F4A7C15, 0x94D049BB, 0xBF58476D)]
    return np.array([int(lane.sum()) & m for lane in lanes], np.uint64)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_digest_matches_a_numpy_oracle_sharded_or_not(dtype):
    x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    x = np.asarray(jax.numpy.asarray(x).astype(dtype).astype("float32"))  # values of `dtype`
    expected = _numpy_digest(x)
    one = np.asarray(fp._digest_jit(jax.numpy.asarray(x, dtype)), np.uint64)
    np.testing.assert_array_equal(one, expected)
    # integer sums are exact in any order: the sharded reduction gives the same digest
    mesh = jax.make_mesh((8,), ("d",))
    sharded = jax.device_put(jax.numpy.asarray(x, dtype),
                             jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
    np.testing.assert_array_equal(np.asarray(fp._digest_jit(sharded), np.uint64), expected)


def test_banks_of_the_old_scheme_are_named_as_such(encoded):
    import dataclasses

    model, bank, _, _ = encoded
    old = msa_jax.MemoryBank(dataclasses.replace(bank.spec, fingerprint="0123456789abcdef"),
                             bank.prefix_k, bank.prefix_v)
    with pytest.raises(msa_jax.BankError, match="fingerprint scheme 1"):
        model.check_bank(old)
