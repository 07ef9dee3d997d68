"""The name table between Hugging Face / upstream-MSA tensors and this port's parameters.

Each entry names a checkpoint tensor, the parameter path it fills, the checkpoint shape the config
implies, and the two transforms. PyTorch Linear weights are [out, in]; ours are einsum kernels
[in, heads, head_dim] or [heads, head_dim, out].
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from msa_jax.config import ModelConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_name: str
    path: Path  # key path inside params
    hf_shape: tuple[int, ...]
    to_param: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    why: str  # the config fields that imply hf_shape, for error messages
    optional: bool = False  # router projections of a plain Qwen3 checkpoint


def _identity(x):
    return x


def _linear_in_heads(heads: int, head_dim: int):
    """[heads*H, D] <-> [D, heads, H]."""
    to_param = lambda w: w.T.reshape(w.shape[1], heads, head_dim)  # noqa: E731
    to_hf = lambda p: p.reshape(p.shape[0], heads * head_dim).T  # noqa: E731
    return to_param, to_hf


def _linear_heads_out(heads: int, head_dim: int):
    """[D, heads*H] <-> [heads, H, D]."""
    to_param = lambda w: w.T.reshape(heads, head_dim, w.shape[0])  # noqa: E731
    to_hf = lambda p: p.reshape(heads * head_dim, p.shape[-1]).T  # noqa: E731
    return to_param, to_hf


def _transpose(w):
    return w.T


def entries(cfg: ModelConfig) -> list[Entry]:
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q_in = _linear_in_heads(n, h)
    kv_in = _linear_in_heads(k, h)
    o_out = _linear_heads_out(n, h)
    out = [
        Entry("model.embed_tokens.weight", ("embed_tokens", "embedding"), (v, d), _identity,
              _identity, f"vocab_size={v}, hidden_size={d}"),
        Entry("model.norm.weight", ("norm", "scale"), (d,), _identity, _identity,
              f"hidden_size={d}"),
    ]
    if not cfg.tie_word_embeddings:
        out.append(Entry("lm_head.weight", ("lm_head", "kernel"), (v, d), _transpose, _transpose,
                         f"vocab_size={v}, hidden_size={d}"))
    for i in range(cfg.num_layers):
        pre, lay = f"model.layers.{i}.", f"layers_{i}"
        attn = (lay, "self_attn")
        qd = f"num_heads={n} x head_dim={h}, hidden_size={d}"
        kd = f"num_kv_heads={k} x head_dim={h}, hidden_size={d}"
        out += [
            Entry(pre + "input_layernorm.weight", (lay, "input_layernorm", "scale"), (d,),
                  _identity, _identity, f"hidden_size={d}"),
            Entry(pre + "post_attention_layernorm.weight",
                  (lay, "post_attention_layernorm", "scale"), (d,), _identity, _identity,
                  f"hidden_size={d}"),
            Entry(pre + "self_attn.q_proj.weight", attn + ("q_proj", "kernel"), (n * h, d), *q_in, qd),
            Entry(pre + "self_attn.k_proj.weight", attn + ("k_proj", "kernel"), (k * h, d), *kv_in, kd),
            Entry(pre + "self_attn.v_proj.weight", attn + ("v_proj", "kernel"), (k * h, d), *kv_in, kd),
            Entry(pre + "self_attn.o_proj.weight", attn + ("o_proj", "kernel"), (d, n * h), *o_out, qd),
            Entry(pre + "self_attn.q_norm.weight", attn + ("q_norm", "scale"), (h,), _identity,
                  _identity, f"head_dim={h}"),
            Entry(pre + "self_attn.k_norm.weight", attn + ("k_norm", "scale"), (h,), _identity,
                  _identity, f"head_dim={h}"),
            Entry(pre + "mlp.gate_proj.weight", (lay, "mlp", "gate_proj", "kernel"), (f, d),
                  _transpose, _transpose, f"intermediate_size={f}, hidden_size={d}"),
            Entry(pre + "mlp.up_proj.weight", (lay, "mlp", "up_proj", "kernel"), (f, d),
                  _transpose, _transpose, f"intermediate_size={f}, hidden_size={d}"),
            Entry(pre + "mlp.down_proj.weight", (lay, "mlp", "down_proj", "kernel"), (d, f),
                  _transpose, _transpose, f"hidden_size={d}, intermediate_size={f}"),
        ]
        if cfg.is_router_layer(i) and cfg.msa.decouple_router:
            out += [
                Entry(pre + "self_attn.router_q_proj.0.weight", attn + ("router_q_proj", "kernel"),
                      (n * h, d), *q_in, qd, optional=True),
                Entry(pre + "self_attn.router_k_proj.0.weight", attn + ("router_k_proj", "kernel"),
                      (k * h, d), *kv_in, kd, optional=True),
            ]
    return out


def ignorable(name: str, cfg: ModelConfig) -> bool:
    """Checkpoint tensors that carry nothing this port needs."""
    if name == "lm_head.weight" and cfg.tie_word_embeddings:
        return True  # some tied checkpoints carry the (identical) head anyway
    if name == "temperature" or name.endswith(".temperature"):
        return True  # upstream's unused router temperature
    return name.endswith("rotary_emb.inv_freq")
