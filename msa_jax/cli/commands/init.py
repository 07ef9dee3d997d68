"""Write a randomly initialised checkpoint of a preset, in Hugging Face format.

The folder gets config.json + model.safetensors and, when the vocabulary has room for it, the
byte-level tokenizer (msa_tokenizer.json), whose pad / end-of-sequence ids and chat prefix are then
written into the config. Random weights: the model's text is gibberish; use it to try the
pipeline (`generate`, `encode`, `ask`) or as a test fixture.
"""

from __future__ import annotations

from absl import flags

from msa_jax.cli import common, report

NAME = "init"
SUMMARY = "write a random checkpoint of a preset (e.g. tiny-msa), with a byte tokenizer"
USAGE = "--out=DIR [--preset=tiny-msa] [--seed=0] [--vocab_size=N] [--dtype=float32] [--overwrite]"


def define_flags(fv: flags.FlagValues, argv):
    del argv
    flags.DEFINE_string("preset", "tiny-msa", "Model preset (msa_jax.config.PRESETS), e.g. "
                        "tiny, tiny-msa, qwen3-0.6b, msa-4b.", flag_values=fv)
    flags.DEFINE_string("out", None, "Checkpoint folder to write.", flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the random weights.", flag_values=fv)
    common.define_bounded(fv, "vocab_size", None, "Vocabulary size (default: the preset's). 263 "
                          "is the byte tokenizer's: then every id the random model emits decodes.")
    common.define_dtype_flag(fv, "Storage dtype of the weights (default: the preset's).")
    flags.DEFINE_boolean("overwrite", False, "Replace --out if it exists.", flag_values=fv)


def execute(fv: flags.FlagValues, config):
    del config
    from msa_jax.atomic import claim

    with claim(fv.out, fv.overwrite, "--overwrite"):  # locked / existing / unwritable: fail fast
        _init(fv)


def _init(fv: flags.FlagValues):
    import msa_jax

    cfg = msa_jax.preset(fv.preset)
    if fv.vocab_size:
        cfg = cfg.replace(vocab_size=fv.vocab_size)
    if fv.dtype:
        cfg = cfg.replace(dtype=fv.dtype, param_dtype=fv.dtype)
    cfg, tok = common.attach_byte_tokenizer(cfg)
    with common.Timer() as t:
        model = msa_jax.MSAModel.random(cfg, seed=fv.seed, tokenizer=tok)
        model.save_pretrained(fv.out, overwrite=fv.overwrite)
    print(f"wrote a RANDOM {fv.preset} checkpoint (seed {fv.seed}) to {fv.out} "
          f"in {t.seconds:.1f} s")
    for line in report.model_lines(cfg, tokenizer=tok):
        print("  " + line)
    if tok is None:
        print(f"  no tokenizer saved: vocab {cfg.vocab_size} is not the byte tokenizer's; "
              "give prompts as --prompt_ids")
