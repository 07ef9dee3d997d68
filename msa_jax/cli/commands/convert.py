"""Convert a Hugging Face Qwen3 or upstream MSA checkpoint: check every tensor, cast, upgrade.

Reads --src (config.json + safetensors, validating every tensor's name and shape), optionally
casts the weights to --dtype, optionally upgrades a plain Qwen3 checkpoint to MSA (router
projections drawn ~ N(0, 0.02) with --seed, as the reference initialises them), and writes --dst
atomically (a failed conversion leaves nothing behind). Tokenizer files are copied along.

Upgrade with --router_layers=18,19,... (or "all") and --pooling_size / --top_k, or with
--msa_preset=NAME (the MSA settings of a preset, e.g. msa-4b), or with a --config file whose `msa`
section names router layers (e.g. configs/msa_4b.py). An MSA source keeps its own settings.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from msa_jax.cli import common, report

NAME = "convert"
SUMMARY = "check / cast a checkpoint, or upgrade Qwen3 to MSA (router layers)"
USAGE = ("--src=DIR --dst=DIR [--dtype=bfloat16] [--msa_preset=NAME | --router_layers=LIST "
         "[--pooling_size=64 --top_k=16]] [--seed=0] [--overwrite] [--config=FILE]")


def define_flags(fv: flags.FlagValues, argv):
    flags.DEFINE_string("src", None, "Source checkpoint folder.", flag_values=fv)
    flags.DEFINE_string("dst", None, "Destination folder (written atomically).", flag_values=fv)
    flags.mark_flags_as_required(["src", "dst"], flag_values=fv)
    common.define_dtype_flag(fv, "Cast the weights to this dtype (default: keep).")
    flags.DEFINE_string("msa_preset", None, "Upgrade to MSA with this preset's MSA settings "
                        "(e.g. msa-4b, tiny-msa).", flag_values=fv)
    flags.DEFINE_string("router_layers", None, "Upgrade to MSA with these router layers: "
                        "comma-separated indices or 'all'.", flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["msa_preset", "router_layers"], flag_values=fv)
    common.define_bounded(fv, "pooling_size", None, "Upgrade: tokens per pooled chunk P "
                          "(default 64).")
    common.define_bounded(fv, "top_k", None, "Upgrade: documents routed per router layer "
                          "(default 16).")
    flags.DEFINE_integer("seed", 0, "Seed of the new router projections.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --dst if it exists.", flag_values=fv)
    common.define_config_flag(fv, argv, None, "optional; its `msa` section can drive the upgrade")


def _msa_settings(fv: flags.FlagValues, config, cfg):
    """The MSAConfig to upgrade a plain Qwen3 `cfg` with, or None to keep the model as it is."""
    import msa_jax
    from msa_jax.config import parse_router_layers

    if cfg.is_msa:
        if fv.msa_preset or fv.router_layers:
            raise common.UsageError(f"{fv.src} is already an MSA checkpoint: drop --msa_preset / "
                                    "--router_layers")
        return None
    if fv.msa_preset:
        base = msa_jax.preset(fv.msa_preset).msa
        if base is None:
            raise common.UsageError(f"preset {fv.msa_preset!r} has no MSA settings")
        layers = base.router_layers
    else:
        layers = fv.router_layers or common.config_value(config, "msa.router_layers")
        if not layers:
            return None
        layers = parse_router_layers(layers, cfg.num_layers)
        base = msa_jax.MSAConfig()
    pool = common.setting(fv, "pooling_size", config, "msa.pooling_size") or base.pooling_size
    top_k = common.setting(fv, "top_k", config, "msa.top_k_docs") or base.top_k_docs
    bad = [i for i in layers if i >= cfg.num_layers]
    if bad:
        raise msa_jax.ConfigError(f"router layers {bad} do not exist: the model has "
                                  f"{cfg.num_layers} layers")
    return dataclasses.replace(base, router_layers=tuple(layers), pooling_size=int(pool),
                               top_k_docs=int(top_k))


def _with_chat_prefix(msa, src: str):
    """Give the new MSA config the chat head in the source's own tokenizer, if it has one."""
    from msa_jax.data import load_tokenizer
    from msa_jax.data.template import IM_START

    try:
        tok = load_tokenizer(src)
    except (OSError, ValueError, ImportError):
        return msa
    if IM_START not in tok.special_tokens:
        return msa
    return dataclasses.replace(msa, prefix_token_ids=common.chat_prefix(tok))


def execute(fv: flags.FlagValues, config):
    from msa_jax.atomic import claim

    common.require_dir(fv.src, "checkpoint")
    with claim(fv.dst, fv.overwrite, "--overwrite"):  # locked / existing / unwritable: fail fast
        _convert(fv, config)


def _convert(fv: flags.FlagValues, config):
    from msa_jax.convert import convert_checkpoint, read_config
    from msa_jax.convert.hf import TOKENIZER_FILES

    cfg = read_config(fv.src)
    msa = _msa_settings(fv, config, cfg)
    dtype = common.setting(fv, "dtype", config, "model.param_dtype") or None
    if msa is not None:
        msa = _with_chat_prefix(msa, fv.src)
    with common.Timer() as t:
        convert_checkpoint(fv.src, fv.dst, dtype=dtype, msa=msa, seed=fv.seed,
                           overwrite=fv.overwrite)  # copies the tokenizer files too
    copied = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(fv.dst, n))]
    out = read_config(fv.dst)
    change = [f"{cfg.param_dtype} -> {out.param_dtype}"]
    if msa is not None:
        change.append(f"Qwen3 -> MSA (router layers {','.join(map(str, msa.router_layers))}, "
                      f"new router projections seeded {fv.seed})")
    print(f"converted {fv.src} -> {fv.dst} in {t.seconds:.1f} s: {'; '.join(change)}; "
          f"tokenizer files copied: {', '.join(copied) or 'none'}")
    for line in report.model_lines(out):
        if not line.startswith("tokenizer"):
            print("  " + line)
