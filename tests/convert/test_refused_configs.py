"""`convert` and `from_pretrained` refuse what they cannot compute faithfully, naming it (issue 9
§3): integer / boolean tensors (today cast to floats), another activation (today run as SiLU and
written back as `silu`), sliding-window attention, biases and RoPE scaling (today ignored)."""

import json
import os

import numpy as np
import pytest

from msa_jax.config import ModelConfig
from msa_jax.convert import CheckpointError, convert_checkpoint, load_pretrained

from tests.convert.test_bad_checkpoints import CFG, assert_refused, ckpt, edit_tensors  # noqa: F401


def edit_config(path, **fields):
    file = os.path.join(path, "config.json")
    with open(file, encoding="utf-8") as f:
        config = json.load(f)
    config.update(fields)
    with open(file, "w", encoding="utf-8") as f:
        json.dump(config, f)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8, np.bool_])
def test_integer_and_boolean_tensors_are_refused(ckpt, tmp_path, dtype):  # noqa: F811
    name = "model.layers.0.self_attn.q_proj.weight"
    edit_tensors(ckpt, lambda t: t.update({name: np.ones(t[name].shape, dtype)}))
    assert_refused(ckpt, tmp_path, f"tensor {name!r} has dtype {np.dtype(dtype)}",
                   "not a floating-point weight")
    with pytest.raises(CheckpointError, match="not a floating-point weight"):
        load_pretrained(ckpt)


@pytest.mark.parametrize("fields, message", [
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act='gelu_pytorch_tanh' is not supported"),
    ({"use_sliding_window": True, "sliding_window": 16},
     "use_sliding_window=True is not supported"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "'sliding_attention' layers"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"mlp_bias": True}, "mlp_bias=True is not supported"),
    ({"attention_dropout": 0.1}, "attention_dropout=0.1 is not supported"),
    ({"model_type": "llama"}, "model_type='llama' is not supported"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling="),
    ({"rope_scaling": {"factor": 4.0}}, "rope_scaling={'factor': 4.0} is not supported"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
     "rope_parameters="),
])
def test_unsupported_config_fields_are_refused(ckpt, tmp_path, fields, message):  # noqa: F811
    edit_config(ckpt, **fields)
    text = assert_refused(ckpt, tmp_path, message)
    assert text.startswith(os.path.join(ckpt, "config.json")), text


@pytest.mark.parametrize("fields", [
    {"hidden_act": "silu", "use_sliding_window": False, "sliding_window": None,
     "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": None, "model_type": "qwen3",
     "layer_types": ["full_attention", "full_attention"], "rope_scaling": None,
     "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}},
    {"rope_scaling": {"rope_type": "default"}},
])
def test_the_supported_values_still_load(fields):
    # what transformers writes for a Qwen3 model (5.x), and a spelled-out default RoPE
    config = {**CFG.to_hf(), **fields}
    assert ModelConfig.from_hf(config).num_layers == CFG.num_layers


def test_convert_keeps_what_it_read(ckpt, tmp_path):  # noqa: F811
    dst = convert_checkpoint(ckpt, os.path.join(str(tmp_path), "dst"))
    with open(os.path.join(dst, "config.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert written["hidden_act"] == "silu" and written["use_sliding_window"] is False
