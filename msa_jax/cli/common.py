"""What every command shares: flag conventions, exit codes, --config settings, model loading.

Flags of a command are defined on a fresh `absl.flags.FlagValues` per invocation (see main.py), so
two commands may both have `--model` with their own help, and `main(argv)` can be called again in
the same process (tests). A setting can come from three places; the first that applies wins:
a flag given on the command line, the `--config` file (ml_collections), the flag's default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Sequence

from absl import flags
from ml_collections import config_flags

from msa_jax.data.template import chat_prefix  # commands use common.chat_prefix too
from msa_jax.errors import MSAError

# Exit codes (README, `msa-jax help`): 0 ok; 1 bad input (a file, a checkpoint, a bank, a
# document...: one line naming it); 2 bad command-line use; 3 an internal error (a bug: please
# report it); 130 interrupted; 141 the output was closed early (`msa-jax info ... | head`).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
EXIT_CODES = ((EXIT_OK, "ok"), (EXIT_ERROR, "bad input: a file, checkpoint, bank, document or "
                                           "setting, named in one line"),
              (EXIT_USAGE, "bad command-line use (flags)"),
              (EXIT_INTERNAL, "internal error: a bug in msa-jax, please report it"),
              (EXIT_INTERRUPTED, "interrupted"),
              (EXIT_BROKEN_PIPE, "the output was closed early (e.g. `| head`)"))
# Errors that mean bad input, not a bug: every msa_jax.errors.MSAError (CheckpointError,
# BankError, CorpusError, ConfigError, TokenizerError, LayoutError, InputError) and OSErrors
# (missing, existing or unreadable paths). Anything else is reported as an internal error.
LIBRARY_ERRORS = (MSAError, OSError)
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


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a numeric setting accepts: its kind (int or float; always finite) and its range."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is outside

    def problem(self, value: Any) -> str | None:
        """Why `value` is not accepted, or None."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (self.kind is int and not isinstance(value, int)):
            return "expected an integer" if self.kind is int else "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


# The one table of numeric settings: a flag of this name and the --config value it stands for
# (`setting`, `config_setting`) are checked by the same rule.
BOUNDS = {
    "max_new_tokens": Bounds(int, 1), "answer_tokens": Bounds(int, 1),
    "max_rounds": Bounds(int, 1), "top_k": Bounds(int, 1), "pooling_size": Bounds(int, 1),
    "block_tokens": Bounds(int, 0), "seed": Bounds(int, -2**63, 2**63 - 1),
    "vocab_size": Bounds(int, 1), "memory_tokens": Bounds(int, 1),
    "temperature": Bounds(float, 0.0), "top_p": Bounds(float, 0.0, 1.0, low_open=True),
}


def define_bounded(fv: flags.FlagValues, name: str, default: Any, help_text: str):
    """An integer or float flag checked by BOUNDS[name] (NaN and infinity refused too)."""
    bounds = BOUNDS[name]
    define = flags.DEFINE_integer if bounds.kind is int else flags.DEFINE_float
    define(name, default, help_text, flag_values=fv)

    def check(value):
        problem = None if value is None else bounds.problem(value)
        if problem:
            raise flags.ValidationError(problem)
        return True

    flags.register_validator(name, check, flag_values=fv)


def checked(name: str, value: Any, where: str) -> Any:
    """`value` if BOUNDS[name] accepts it, else a UsageError naming `where` (a flag or a key)."""
    problem = BOUNDS[name].problem(value)
    if problem:
        raise UsageError(f"{where}={value!r}: {problem}")
    return value


def define_sampling_flags(fv: flags.FlagValues, max_new_tokens: int):
    define_bounded(fv, "max_new_tokens", max_new_tokens, "Tokens to generate at most.")
    define_bounded(fv, "temperature", 0.0, "Sampling temperature (>= 0); 0 = greedy.")
    define_bounded(fv, "top_p", 1.0, "Nucleus sampling, in (0, 1]: keep the smallest set of "
                   "tokens whose probability reaches top_p.")
    define_bounded(fv, "seed", 0, "Seed of the sampler.")


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
    """Flag `name` if given on the command line, else --config's `path`, else the flag default.
    A config value is checked by the flag's own bounds (BOUNDS)."""
    if fv[name].present or config is None:
        return fv[name].value
    value = config_value(config, path)
    if value is None:
        return fv[name].value
    return checked(name, value, f"--config.{path}") if name in BOUNDS else value


def config_setting(config, path: str, name: str) -> Any:
    """--config's `path`, checked by BOUNDS[name] (for settings that have no flag)."""
    return checked(name, config_value(config, path), f"--config.{path}")


def use_cpu_cores(limit: int = 8) -> bool:
    """One JAX CPU device per core (at most `limit`), so that encoding spreads its blocks over
    every core (`encode_memory(devices="local")`; XLA:CPU runs one small block on about one
    core). Set before JAX starts its backends, unless XLA_FLAGS or JAX_NUM_CPU_DEVICES already
    choose a count; computations not spread stay on the first device. True if it took effect."""
    import jax

    if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or "JAX_NUM_CPU_DEVICES" in os.environ):
        return False
    try:
        jax.config.update("jax_num_cpu_devices", max(1, min(os.cpu_count() or 1, limit)))
    except RuntimeError:  # the backends have started (an in-process caller, the tests)
        return False
    return True


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


def bundled(*parts: str) -> str:
    """The repository's file or folder `parts` (a checkout or an editable install), else the copy
    a wheel installs under msa_jax/ (setup.py ships configs/ and models/ there)."""
    for root in (REPO_ROOT, PACKAGE_ROOT):
        path = os.path.join(root, *parts)
        if os.path.exists(path):
            return path
    return os.path.join(*parts)


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
    from msa_jax.data import ByteTokenizer

    return attach_tokenizer(cfg, ByteTokenizer())


def attach_tokenizer(cfg, tok):
    """(cfg with `tok`'s pad / eos ids and chat prefix, tok), or (cfg, None) when the model's
    vocabulary is too small for it."""
    import dataclasses

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
