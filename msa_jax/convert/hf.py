"""Hugging Face (Qwen3) and upstream MSA checkpoints <-> this port's parameters, without torch."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.config import ConfigError, MSAConfig, ModelConfig
from msa_jax.convert import safetensors_io as st
from msa_jax.convert.names import Entry, entries, ignorable
from msa_jax.utils import atomic_directory

CheckpointError = st.CheckpointError
log = logging.getLogger(__name__)


def read_config(directory: str, **overrides) -> ModelConfig:
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{directory}: no config.json")
    try:
        return ModelConfig.from_json_file(path, **overrides)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def _set(tree: dict, path: tuple[str, ...], value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _check(tensors: dict[str, np.ndarray], table: list[Entry], cfg: ModelConfig, where: str,
           allow_missing_router: bool):
    known = {e.hf_name for e in table}
    missing = [e for e in table if e.hf_name not in tensors
               and not (e.optional and allow_missing_router)]
    if missing:
        e = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{where}: missing tensor {e.hf_name!r}, expected shape "
                              f"{e.hf_shape} ({e.why}){more}")
    unexpected = sorted(n for n in tensors if n not in known and not ignorable(n, cfg))
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensors not used by this model: "
                              f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for e in table:
        kind = tensors[e.hf_name].dtype if e.hf_name in tensors else None
        if kind is not None and not jnp.issubdtype(kind, jnp.floating):  # bfloat16 included
            raise CheckpointError(
                f"{where}: tensor {e.hf_name!r} has dtype {kind}, not a floating-point weight "
                f"({e.why}); a quantized or integer checkpoint cannot be read as floats")
        if e.hf_name in tensors and tuple(tensors[e.hf_name].shape) != e.hf_shape:
            raise CheckpointError(
                f"{where}: tensor {e.hf_name!r} has shape {tuple(tensors[e.hf_name].shape)}, the "
                f"config implies {e.hf_shape} ({e.why}); wrong or transposed tensor, or a "
                f"config.json that contradicts the weights")


def params_from_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray], where: str = "checkpoint",
                        allow_missing_router: bool = False, seed: int = 0) -> dict:
    """name -> array (Hugging Face layout) -> params pytree (numpy, cfg.param_dtype).

    With `allow_missing_router`, absent router projections are drawn ~ N(0, router_init_std)
    (seeded), as the reference initialises them when it upgrades a Qwen3 checkpoint.
    """
    table = entries(cfg)
    _check(tensors, table, cfg, where, allow_missing_router)
    dtype = np.dtype(jnp.dtype(cfg.param_dtype))
    rng = np.random.default_rng(seed)
    params: dict = {}
    drawn = []
    for e in table:
        if e.hf_name in tensors:
            value = e.to_param(np.asarray(tensors[e.hf_name]))
        else:
            value = e.to_param(rng.normal(0.0, cfg.msa.router_init_std, e.hf_shape))
            drawn.append(e.hf_name)
        _set(params, e.path, np.ascontiguousarray(value.astype(dtype)))
    if drawn:
        log.info("initialised %d router projections ~ N(0, %g) (seed %d)", len(drawn),
                 cfg.msa.router_init_std, seed)
    return params


def tensors_from_params(cfg: ModelConfig, params: dict, dtype=None) -> dict[str, np.ndarray]:
    """params pytree -> name -> numpy array in the Hugging Face / upstream layout."""
    out = {}
    for e in entries(cfg):
        value = np.asarray(jax.device_get(_get(params, e.path)))
        if dtype is not None:
            value = value.astype(dtype)
        hf = np.ascontiguousarray(e.to_hf(value))
        if hf.shape != e.hf_shape:
            raise CheckpointError(f"param {'/'.join(e.path)} gives {e.hf_name} of shape {hf.shape},"
                                  f" expected {e.hf_shape}")
        out[e.hf_name] = hf
    return out


def load_pretrained(directory: str, *, dtype: str | None = None, param_dtype: str | None = None,
                    msa: MSAConfig | None = None, seed: int = 0, sharding=None,
                    **overrides: Any) -> tuple[ModelConfig, Any]:
    """A Hugging Face Qwen3 or upstream MSA directory -> (config, params on device).

    `msa` upgrades a plain Qwen3 checkpoint to MSA (router projections initialised, seeded).
    `dtype` is the compute dtype; `param_dtype` defaults to it. `sharding`, if given, is a pytree
    of shardings (see model/params.py `param_shardings`) the weights are placed with.
    """
    if dtype is not None:
        overrides["dtype"] = dtype
        overrides.setdefault("param_dtype", param_dtype or dtype)
    elif param_dtype is not None:
        overrides["param_dtype"] = param_dtype
    cfg = read_config(directory, **overrides)
    upgrading = msa is not None and not cfg.is_msa
    if msa is not None:
        cfg = cfg.replace(msa=msa)
    tensors = st.read_checkpoint(directory)
    params = params_from_tensors(cfg, tensors, where=directory, allow_missing_router=upgrading,
                                 seed=seed)
    if sharding is None:
        return cfg, jax.tree.map(jnp.asarray, params)
    return cfg, jax.tree.map(jax.device_put, params, sharding)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "generation_config.json", "msa_tokenizer.json")


def save_pretrained(directory: str, cfg: ModelConfig, params, *, dtype: str | None = None,
                    overwrite: bool = False, max_shard_bytes: int = 5 * 2**30,
                    copy_from: str | None = None, write_extra=None):
    """Write config.json + safetensors that `transformers` (Qwen3) or the reference (MSA) loads.

    Tokenizer files present in `copy_from` are copied; `write_extra(tmp_dir)` may add files.
    Everything is written atomically: into a temporary directory renamed when complete.
    """
    np_dtype = np.dtype(jnp.dtype(dtype)) if dtype else None
    tensors = tensors_from_params(cfg, params, np_dtype)
    hf_cfg = cfg.to_hf()
    if dtype:
        hf_cfg["torch_dtype"] = dtype
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        st.write_checkpoint(tmp, tensors, max_shard_bytes=max_shard_bytes)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf_cfg, f, indent=2)
        for name in TOKENIZER_FILES if copy_from else ():
            if os.path.exists(os.path.join(copy_from, name)):
                shutil.copy(os.path.join(copy_from, name), os.path.join(tmp, name))
        if write_extra is not None:
            write_extra(tmp)
    return directory
