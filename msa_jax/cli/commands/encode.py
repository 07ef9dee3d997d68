"""Encode a corpus into a memory bank (stage 1), streamed block by block, and save the bank.

--corpus is a .jsonl file (one {"id", "text"} or {"id", "tokens"} record per line), a folder of
.txt / .md files, or the reference's .json / .pkl memory files (msa_jax.data.load_corpus). Text
documents are wrapped as the reference does before tokenizing. With --journal=DIR every encoded
block is committed to DIR as it finishes, so an interrupted run picks up where it stopped when run
again with the same flags. The bank is written atomically to --out. --out (and --journal) are
locked for the whole run: a second run on the same path stops at once, naming the first's pid;
a locked, existing (without --overwrite), missing or read-only --out fails before any compute.
"""

from __future__ import annotations

import os

from absl import flags

from msa_jax.cli import common, report

NAME = "encode"
SUMMARY = "encode a corpus into a memory bank (resumable with --journal)"
USES_CPU_CORES = True  # one JAX CPU device per core: encoding uses them all
USAGE = ("--model=DIR --corpus=PATH --out=BANK_DIR [--block_tokens=N] [--journal=DIR] "
         "[--dtype=...] [--routing_dtype=...] [--overwrite] [--noprogress] [--config=FILE]")


def define_flags(fv: flags.FlagValues, argv):
    common.define_model_flag(fv, help_text="MSA checkpoint folder (with router layers).")
    flags.DEFINE_string("corpus", None, "Corpus: .jsonl, folder of .txt/.md, .json or .pkl.",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "Memory bank folder to write.", flag_values=fv)
    flags.mark_flags_as_required(["corpus", "out"], flag_values=fv)
    common.define_bounded(fv, "block_tokens", None, "Tokens per encoding block (default or 0: "
                          "4096 with the Pallas kernels, 512 on the XLA path (CPU), or the "
                          "longest document rounded up to a power of two).")
    flags.DEFINE_string("journal", None, "Folder committing each encoded block, so an "
                        "interrupted run resumes.", flag_values=fv)
    common.define_dtype_flag(fv, "Dtype of the bank's tiers (default: the model's compute dtype).")
    flags.DEFINE_enum("routing_dtype", None, common.DTYPES + ("int8",),
                      "Dtype of the routing tier if not --dtype; int8: one float32 scale per "
                      "chunk, router layer and KV head (docs/architecture.md).", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace --out if it exists.", flag_values=fv)
    flags.DEFINE_boolean("progress", True, "Show a progress bar.", flag_values=fv)
    common.define_config_flag(fv, argv, None, "optional inference settings, e.g. configs/msa_4b.py")


def execute(fv: flags.FlagValues, config):
    from msa_jax.atomic import claim

    with claim(fv.out, fv.overwrite, "--overwrite"):  # fail before spending the compute
        _encode(fv, config)


def _encode(fv: flags.FlagValues, config):
    import msa_jax
    from msa_jax.data import load_corpus

    docs = load_corpus(fv.corpus)
    model = common.load_model(
        fv.model, dtype=common.config_value(config, "model.dtype"),
        kernel_implementation=common.config_value(config, "model.kernel_implementation"))
    dtype = common.setting(fv, "dtype", config, "memory.dtype")
    routing_dtype = common.setting(fv, "routing_dtype", config, "memory.routing_dtype")
    block_tokens = common.setting(fv, "block_tokens", config, "memory.block_tokens")
    print(f"encoding {len(docs)} documents from {fv.corpus}"
          + (f" (journal {fv.journal})" if fv.journal else ""), flush=True)
    with common.Timer() as t:
        bank = model.encode_memory(docs, block_tokens=block_tokens or None, journal=fv.journal,
                                   progress=fv.progress, dtype=dtype or None,
                                   routing_dtype=routing_dtype or None, devices="local")
    with common.Timer() as s:
        msa_jax.save_bank(bank, os.path.abspath(fv.out), overwrite=fv.overwrite)
    print(f"encoded in {t.seconds:.1f} s ({bank.num_tokens / max(t.seconds, 1e-9):,.0f} tokens/s, "
          f"JIT compilation included); saved in {s.seconds:.1f} s")
    for line in report.bank_lines(bank, fv.out):
        print(line)
