"""Bad checkpoints are refused with an error naming the problem, and leave no output."""

import json
import os

import numpy as np
import pytest

from msa_jax.config import MSAConfig, preset
from msa_jax.convert import (CheckpointError, convert_checkpoint, load_pretrained,
                             save_pretrained)
from msa_jax.convert import safetensors_io as st
from msa_jax.model.params import init_params

CFG = preset("tiny", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
             num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False)


@pytest.fixture()
def ckpt(tmp_path):
    path = os.path.join(str(tmp_path), "src")
    save_pretrained(path, CFG, init_params(CFG, 0))
    return path


def edit_tensors(path, fn):
    file = os.path.join(path, st.SINGLE_FILE)
    tensors = {k: np.array(v) for k, v in st.read_file(file).items()}
    fn(tensors)
    st.write_file(file, tensors)


def assert_refused(src, tmp_path, *fragments):
    dst = os.path.join(str(tmp_path), "dst")
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint(src, dst)
    for f in fragments:
        assert f in str(err.value), str(err.value)
    assert not os.path.exists(dst)
    assert [p for p in os.listdir(str(tmp_path)) if p.startswith(".dst")] == []
    return str(err.value)


def test_valid_checkpoint_converts(ckpt, tmp_path):
    dst = convert_checkpoint(ckpt, os.path.join(str(tmp_path), "dst"), dtype="bfloat16")
    cfg, params = load_pretrained(dst)
    assert cfg.param_dtype == "bfloat16"
    assert params["layers_0"]["mlp"]["up_proj"]["kernel"].dtype == np.dtype("bfloat16")


def test_dropped_tensor(ckpt, tmp_path):
    edit_tensors(ckpt, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    assert_refused(ckpt, tmp_path, "missing tensor", "model.layers.1.mlp.down_proj.weight",
                   "(32, 48)")


def test_extra_tensor(ckpt, tmp_path):
    edit_tensors(ckpt, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
    assert_refused(ckpt, tmp_path, "unexpected", "model.layers.0.mlp.extra.weight")


def test_transposed_tensor(ckpt, tmp_path):
    name = "model.layers.0.mlp.gate_proj.weight"
    edit_tensors(ckpt, lambda t: t.update({name: np.ascontiguousarray(t[name].T)}))
    assert_refused(ckpt, tmp_path, name, "(32, 48)", "(48, 32)")


def test_truncated_file(ckpt, tmp_path):
    file = os.path.join(ckpt, st.SINGLE_FILE)
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size - 100)
    assert_refused(ckpt, tmp_path, "truncated", file)


def test_config_contradicts_tensors(ckpt, tmp_path):
    path = os.path.join(ckpt, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["intermediate_size"] = 64
    with open(path, "w") as f:
        json.dump(cfg, f)
    assert_refused(ckpt, tmp_path, "intermediate_size=64", "config")


def test_sharded_checkpoint_and_tied_head_present(tmp_path):
    cfg = CFG.replace(tie_word_embeddings=True)
    params = init_params(cfg, 1)
    path = save_pretrained(os.path.join(str(tmp_path), "sharded"), cfg, params,
                           max_shard_bytes=20_000)
    assert os.path.exists(os.path.join(path, st.INDEX_FILE))
    assert len([p for p in os.listdir(path) if p.endswith(".safetensors")]) > 1
    # a tied checkpoint that carries lm_head.weight anyway still loads
    file = sorted(p for p in os.listdir(path) if p.endswith(".safetensors"))[0]
    edit_tensors_file = os.path.join(path, file)
    tensors = {k: np.array(v) for k, v in st.read_file(edit_tensors_file).items()}
    tensors["lm_head.weight"] = np.asarray(params["embed_tokens"]["embedding"])
    st.write_file(edit_tensors_file, tensors)
    cfg2, params2 = load_pretrained(path)
    np.testing.assert_array_equal(np.asarray(params2["layers_1"]["mlp"]["up_proj"]["kernel"]),
                                  np.asarray(params["layers_1"]["mlp"]["up_proj"]["kernel"]))


def test_missing_router_in_msa_checkpoint_is_an_error(tmp_path):
    cfg = CFG.replace(num_layers=2, msa=MSAConfig(router_layers=(1,), pooling_size=4))
    path = save_pretrained(os.path.join(str(tmp_path), "msa"), cfg, init_params(cfg, 0))
    edit_tensors(path, lambda t: t.pop("model.layers.1.self_attn.router_k_proj.0.weight"))
    assert_refused(path, tmp_path, "router_k_proj")


def test_upgrading_qwen3_initialises_router_seeded(ckpt):
    msa = MSAConfig(router_layers=(1,), pooling_size=4)
    cfg, a = load_pretrained(ckpt, msa=msa, seed=3)
    _, b = load_pretrained(ckpt, msa=msa, seed=3)
    w = np.asarray(a["layers_1"]["self_attn"]["router_q_proj"]["kernel"])
    np.testing.assert_array_equal(w, np.asarray(b["layers_1"]["self_attn"]["router_q_proj"]["kernel"]))
    assert abs(w.std() - 0.02) < 0.004
    assert "router_q_proj" not in a["layers_0"]["self_attn"]
