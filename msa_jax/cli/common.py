"""What every command shares: flag conventions, exit codes, --config settings, model loading.

Flags of a command are defined on a fresh `absl.flags.FlagValues` per invocation (see main.py), so
two commands may both have `--model` with their own help, and `main(argv)` can be called again in
the same process (tests). A setting can come from three places; the first that applies wins:
a flag given on the command line, the `--config` file (ml_collections), the flag's default.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from absl import flags
from ml_collections import config_flags

from msa_jax.data.template import chat_prefix  # commands use common.chat_prefix too

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Library errors that mean bad input, not a bug: CheckpointError, BankError, CorpusError,
# ConfigError, TokenizerError, LayoutError are ValueErrors; missing / existing paths are OSErrors.
LIBRARY_ERRORS = (ValueError, OSError)
DTYPES = ("float32", "bfloat16", "float16")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../msa_jax
REPO_ROOT = os.path.dirname(PACKAGE_ROOT)


class UsageError(Exception):
    """Bad command-line use; printed with the command's usage line, exit code 2."""


def default_compilation_cache() -> str:
    """$JAX_COMPILATION_CACHE_DIR, else ~/.cache/msa-jax/jax (XDG_CACHE_HOME respected)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(base, "msa-jax", "jax")


def define_common_flags(fv: flags.FlagValues):
    flags.DEFINE_string(
        "compilation_cache", default_compilation_cache(),
        "Folder of JAX's persistent compilation cache: a second run skips most of the JIT "
        "compilation that dominates small runs on CPU. Empty string: no cache.", flag_values=fv)
    flags.DEFINE_boolean("verbose", False, "Show the library's INFO logs (orbax, JAX).",
                         flag_values=fv)
    flags.DEFINE_boolean("traceback", False, "On an error, show the full Python traceback "
                         "instead of one line.", flag_values=fv)


def define_config_flag(fv: flags.FlagValues, argv: Sequence[str], default: str | None,
                       what: str):
    """--config=FILE (a Python file with get_config()); --config.a.b=VALUE overrides a key."""
    config_flags.DEFINE_config_file(
        "config", default, f"ml_collections config file ({what}); override one key with "
        "--config.section.key=VALUE. Flags given explicitly win over the config.",
        flag_values=fv, lock_config=True, sys_argv=list(argv))


def define_model_flag(fv: flags.FlagValues, required: bool = True,
                      help_text: str = "Checkpoint folder (config.json + *.safetensors, tokenizer "
                                           "beside it), e.g. from `msa-jax init` or `convert`."):
    flags.DEFINE_string("model", None, help_text, flag_values=fv)
    if required:
        flags.mark_flag_as_required("model", flag_values=fv)


def define_dtype_flag(fv: flags.FlagValues, help_text: str):
    flags.DEFINE_enum("dtype", None, DTYPES, help_text, flag_values=fv)


def define_sampling_flags(fv: flags.FlagValues, max_new_tokens: int):
    flags.DEFINE_integer("max_new_tokens", max_new_tokens, "Tokens to generate at most.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 = greedy.", lower_bound=0.0,
                       flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling: keep the smallest set of tokens whose "
                       "probability reaches top_p.", lower_bound=0.0, upper_bound=1.0,
                       flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the sampler.", flag_values=fv)


def loaded_config(fv: flags.FlagValues):
    """The --config value (None if the command was given none); a file that cannot be loaded is a
    usage error."""
    if "config" not in fv or fv["config"].value is None:
        return None
    config = fv["config"].value
    try:
        config.keys()  # a failed load is an object that raises on first use
    except OSError:
        path = config_flags.get_config_filename(fv["config"]) or fv["config"].default_as_str
        raise UsageError(f"--config: cannot load config file {path} (missing, or no "
                         f"get_config())") from None
    return config


def config_value(config, path: str, default: Any = None) -> Any:
    """config["a"]["b"] for path "a.b"; `default` where the config lacks a key."""
    node = config
    for key in path.split("."):
        if node is None or key not in node:
            return default
        node = node[key]
    return node


def setting(fv: flags.FlagValues, name: str, config, path: str) -> Any:
    """Flag `name` if given on the command line, else --config's `path`, else the flag default."""
    if fv[name].present or config is None:
        return fv[name].value
    value = config_value(config, path, fv[name].value)
    return fv[name].value if value is None else value


def enable_compilation_cache(path: str):
    if not path:
        return
    import jax

    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Small programs too: on CPU a tiny model's many sub-second compilations add up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def require_dir(path: str, what: str):
    from msa_jax.convert import CheckpointError

    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such {what} folder")


def load_model(path: str, dtype: str | None = None, kernel_implementation: str | None = None,
               top_k: int | None = None):
    """msa_jax.from_pretrained with the CLI's inference overrides (dtype, kernels, top-k)."""
    import msa_jax

    require_dir(path, "checkpoint")
    overrides: dict[str, Any] = {}
    if kernel_implementation:
        overrides["kernel_implementation"] = kernel_implementation
    if top_k:
        overrides["msa_overrides"] = {"top_k_docs": int(top_k)}
    return msa_jax.from_pretrained(path, dtype=dtype or None, **overrides)


def load_bank(path: str, checksums: bool = True):
    import msa_jax
    from msa_jax.atomic import recover_for_reading

    recover_for_reading(path, "memory bank")  # a replacement killed mid-swap left it missing
    if not os.path.isdir(path):
        raise msa_jax.BankError(f"{path}: no such memory bank folder")
    return msa_jax.load_bank(os.path.abspath(path), checksums=checksums)


def attach_byte_tokenizer(cfg):
    """(cfg with the ByteTokenizer's pad / eos ids and chat prefix, tokenizer), or (cfg, None)
    when the vocabulary is too small for it."""
    import dataclasses

    from msa_jax.data import ByteTokenizer

    tok = ByteTokenizer()
    if cfg.vocab_size < tok.vocab_size:
        return cfg, None
    cfg = cfg.replace(pad_token_id=tok.pad_id, eos_token_id=tuple(tok.eos_ids))
    if cfg.is_msa:
        cfg = cfg.replace(msa=dataclasses.replace(cfg.msa, prefix_token_ids=chat_prefix(tok)))
    return cfg, tok


def parse_ids(values: Sequence[str], what: str) -> list[int]:
    try:
        ids = [int(v) for v in values]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {','.join(values)}") \
            from None
    if not ids or min(ids) < 0:
        raise UsageError(f"{what} must be non-negative integers")
    return ids


class Timer:
    """with Timer() as t: ...; t.seconds"""

    def __enter__(self):
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start


def write_json(path: str, value: Any):
    """Write JSON atomically (readers never see a half-written file)."""
    import json

    from msa_jax.utils import atomic_write_bytes

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())
