"""Generate a continuation of a prompt with a checkpoint (plain language model, no memory).

Give the prompt as text (--prompt, tokenized with the checkpoint's tokenizer) or as token ids
(--prompt_ids=1,2,3, for checkpoints without a tokenizer). Greedy by default; --temperature and
--top_p sample (seeded). The first call of a shape includes JIT compilation.
"""

from __future__ import annotations

import sys

from absl import flags

from msa_jax.cli import common, report
from msa_jax.errors import InputError

NAME = "generate"
SUMMARY = "continue a prompt (text or token ids) with a checkpoint"
USAGE = ("--model=DIR (--prompt=TEXT | --prompt_ids=1,2,3) [--max_new_tokens=32] "
         "[--temperature=0] [--top_p=1] [--seed=0] [--dtype=...] [--config=FILE]")


def define_flags(fv: flags.FlagValues, argv):
    common.define_model_flag(fv)
    flags.DEFINE_string("prompt", None, "Prompt text.", flag_values=fv)
    flags.DEFINE_list("prompt_ids", None, "Prompt as comma-separated token ids.", flag_values=fv)
    flags.mark_flags_as_mutual_exclusive(["prompt", "prompt_ids"], required=True, flag_values=fv)
    common.define_sampling_flags(fv, max_new_tokens=32)
    common.define_dtype_flag(fv, "Compute dtype (default: the checkpoint's).")
    common.define_config_flag(fv, argv, None, "optional inference settings, e.g. configs/tiny.py")


def execute(fv: flags.FlagValues, config):
    ids = common.parse_ids(fv.prompt_ids, "--prompt_ids") if fv.prompt_ids is not None else None
    if ids is None and not fv.prompt:
        raise common.UsageError("--prompt is empty")
    kwargs = dict(max_new_tokens=common.setting(fv, "max_new_tokens", config,
                                                "generation.max_new_tokens"),
                  temperature=common.setting(fv, "temperature", config, "generation.temperature"),
                  top_p=common.setting(fv, "top_p", config, "generation.top_p"),
                  seed=common.setting(fv, "seed", config, "generation.seed"))
    model = common.load_model(
        fv.model, dtype=common.setting(fv, "dtype", config, "model.dtype"),
        kernel_implementation=common.config_value(config, "model.kernel_implementation"))
    tok = model.tokenizer
    if ids is None:
        if tok is None:
            raise InputError(f"{fv.model} has no tokenizer: give the prompt as --prompt_ids")
        ids = tok.encode(fv.prompt)
    with common.Timer() as t:  # the model checks the ids and that prompt + new tokens fit
        out = model.generate(ids, **kwargs)
    if fv.prompt_ids is not None:
        print(",".join(map(str, out)))
    if tok is not None:
        known = [i for i in out if i < tok.vocab_size]
        text = tok.decode(known, skip_special=True)
        print(text if fv.prompt_ids is None else f"text: {report.show(text)}")
        if len(known) < len(out):  # a model vocabulary larger than the tokenizer's (padding)
            print(f"({len(out) - len(known)} generated ids are outside the tokenizer's "
                  f"{tok.vocab_size} ids and were not decoded)", file=sys.stderr)
    how = "greedy" if not kwargs["temperature"] else \
        f"temperature {kwargs['temperature']}, top-p {kwargs['top_p']}, seed {kwargs['seed']}"
    print(f"({kwargs['max_new_tokens']} new tokens at most, {how}; {t.seconds:.1f} s including "
          "JIT compilation)", file=sys.stderr)
