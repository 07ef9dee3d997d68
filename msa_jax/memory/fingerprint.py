"""Which model encoded a bank: a hash of the settings that shape the pooled tensors and of a
strided sample of every layer's key projection (cheap even for a 4B model)."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np

from msa_jax.config import ModelConfig

_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
           "num_kv_heads", "head_dim", "rms_norm_eps", "rope_theta")


def model_fingerprint(cfg: ModelConfig, params) -> str:
    msa = cfg.msa
    settings = {f: getattr(cfg, f) for f in _FIELDS}
    settings.update(router_layers=list(msa.router_layers), pooling_size=msa.pooling_size,
                    decouple_router=msa.decouple_router, normalised_keys=msa.inference_cosine,
                    prefix=list(msa.prefix_token_ids))
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for i in range(cfg.num_layers):
        attn = params[f"layers_{i}"]["self_attn"]
        names = ["k_proj", "k_norm"] + (["router_k_proj"] if "router_k_proj" in attn else [])
        for name in names:
            leaf = next(iter(attn[name].values()))
            sample = np.asarray(jax.device_get(leaf), np.float32).reshape(-1)[::97]
            h.update(sample.tobytes())
    return h.hexdigest()[:16]
