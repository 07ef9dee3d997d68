"""Which model encoded a bank: a hash of the settings that shape the stored tensors and of the
full values of every weight they depend on.

A bank stores, per router layer, pooled K̄r, K̄, V̄ (they depend on the embedding and on every
weight of layers 0..last router layer) and the chat prefix's K/V of *every* layer. So the hash
covers the embedding and every decoder layer, whole (attention with q/k/v/o, q_norm/k_norm,
router projections, both norms, MLP); only the final norm and an untied LM head are left out: a
model differing there reads the same bank.

Weights are hashed on the device that holds them (sharded arrays too) by a jitted reduction:
each value is widened to float32 (exact for bfloat16/float16, so one checkpoint loaded at either
dtype has one fingerprint), its bits mixed with its flat index by murmur3's finaliser, and the
mixed words summed modulo 2**32 in four independently re-mixed lanes: a 128-bit digest per
weight. Integer sums are exact, so the digest does not depend on the device, the sharding or the
reduction order. It detects any change of any value (per element the mix is a bijection) and
reordered values; it is not meant to resist a deliberate forgery. Host-side, sha256 combines the
settings with every weight's name, shape and digest.

Cost: one read of the weights at memory bandwidth plus ~25 integer operations per value. Measured
on this project's 2-core CPU build machine: see docs/architecture.md ("Model fingerprint").
Results are cached per parameter pytree (by identity of its arrays), so a model hashes once.
"""

from __future__ import annotations

import hashlib
import json
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.config import ModelConfig

SCHEME = 2  # bump when the hash changes: banks of another scheme are named as such
_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
           "num_kv_heads", "head_dim", "rms_norm_eps", "rope_theta")
_MSA_FIELDS = ("router_layers", "pooling_size", "decouple_router", "pooling_mode",
               "rewrite_position", "prefix_token_ids")
_UNHASHED = ("norm", "lm_head")  # top-level params no stored tensor depends on
_GOLDEN = np.uint32(0x9E3779B9)
_LANES = (0x7F4A7C15, 0x94D049BB, 0xBF58476D)  # seeds of lanes 1..3 (lane 0: the mix itself)


def settings(cfg: ModelConfig) -> dict:
    """Every config field that changes the pooled tiers or the prefix K/V. The compute dtype is
    not one (it changes rounding, not the model); the tiers' dtype is BankSpec.dtype, and appends
    are cast to it."""
    msa = cfg.msa
    out = {f: getattr(cfg, f) for f in _FIELDS}
    out.update({f: getattr(msa, f) for f in _MSA_FIELDS})
    out.update(scheme=SCHEME, normalised_keys=msa.inference_cosine)
    return out


def _fmix(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 that spreads every input bit."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _digest(x: jax.Array) -> jax.Array:
    """Any-shape float array -> uint32[4]."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32).reshape(-1), jnp.uint32)
    h = _fmix(bits + jnp.arange(bits.size, dtype=jnp.uint32) * _GOLDEN)
    lanes = [h] + [_fmix(h ^ np.uint32(s)) for s in _LANES]
    return jnp.stack([jnp.sum(lane, dtype=jnp.uint32) for lane in lanes])


_digest_jit = jax.jit(_digest)
_CACHE: dict[tuple, tuple[list, str]] = {}  # (settings, leaf ids) -> (weakrefs to the leaves, hash)
_CACHE_SIZE = 8


def _hashed_leaves(params) -> list[tuple[str, jax.Array]]:
    unknown = [k for k in params if k not in _UNHASHED and k != "embed_tokens"
               and not k.startswith("layers_")]
    if unknown:  # a new top-level weight must be classified here, not silently skipped
        raise ValueError(f"model_fingerprint: unknown top-level params {unknown}")
    hashed = {k: v for k, v in params.items() if k not in _UNHASHED}
    return [(jax.tree_util.keystr(p), x)
            for p, x in jax.tree_util.tree_leaves_with_path(hashed)]


def _compute(setting_json: str, leaves: list[tuple[str, jax.Array]]) -> str:
    h = hashlib.sha256(setting_json.encode())
    digests = jax.device_get([_digest_jit(x) for _, x in leaves])
    for (name, x), d in zip(leaves, digests):
        h.update(f"{name}{tuple(x.shape)}".encode())
        h.update(np.asarray(d, np.uint32).tobytes())
    return f"{SCHEME}-{h.hexdigest()[:32]}"


def model_fingerprint(cfg: ModelConfig, params) -> str:
    """'2-<32 hex digits>': equal iff the settings and every hashed weight are equal."""
    leaves = _hashed_leaves(params)
    setting_json = json.dumps(settings(cfg), sort_keys=True)
    key = (setting_json, tuple(id(x) for _, x in leaves))
    hit = _CACHE.get(key)
    if hit is not None and all(r() is x for r, (_, x) in zip(hit[0], leaves)):
        return hit[1]
    fp = _compute(setting_json, leaves)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = ([weakref.ref(x) for _, x in leaves], fp)
    return fp


def scheme_of(fingerprint: str) -> int:
    """The fingerprint scheme a bank's fingerprint was made with (1: before scheme numbers)."""
    head, sep, _ = fingerprint.partition("-")
    return int(head) if sep and head.isdigit() else 1


def mismatch(what: str, theirs: str, ours: str, fix: str) -> str:
    """The one-line refusal for `what` (a bank, a journal) made by another model."""
    if scheme_of(theirs) != SCHEME:
        return (f"{what} was made with model fingerprint scheme {scheme_of(theirs)} "
                f"(fingerprint {theirs}); this version uses scheme {SCHEME} and cannot tell "
                f"whether the model is the same: {fix}")
    return (f"{what} was made by another model (fingerprint {theirs}, this model {ours}: a "
            f"different model's weights or settings); {fix}")
