"""Describe a checkpoint and / or a memory bank.

--model: architecture, shapes, parameter count (from config.json; weights are not loaded),
router settings and what the memory costs per document token, files and tokenizer.
--bank: documents, tokens, pooled chunks, and bytes per tier and per memory token (files are
checked against their recorded sizes; --checksums verifies them fully). With both, also whether
the bank was encoded by this model (this loads the weights).
"""

from __future__ import annotations

import os

from absl import flags

from msa_jax.cli import common, report

NAME = "info"
SUMMARY = "summarise a checkpoint (--model) and / or a memory bank (--bank)"
USAGE = "(--model=DIR | --bank=BANK_DIR | both) [--checksums]"


def define_flags(fv: flags.FlagValues, argv):
    del argv
    common.define_model_flag(fv, required=False)
    flags.DEFINE_string("bank", None, "Memory bank folder.", flag_values=fv)
    flags.register_multi_flags_validator(
        ["model", "bank"], lambda d: bool(d["model"] or d["bank"]),
        message="give --model=DIR, --bank=BANK_DIR or both", flag_values=fv)
    flags.DEFINE_boolean("checksums", False, "Verify the bank's file checksums (reads it all).",
                         flag_values=fv)


def _model_info(path: str):
    from msa_jax.convert import read_config
    from msa_jax.convert.safetensors_io import checkpoint_files
    from msa_jax.data import load_tokenizer

    common.require_dir(path, "checkpoint")
    cfg = read_config(path)
    try:
        tok = load_tokenizer(path)
    except (OSError, ValueError, ImportError):
        tok = None
    for line in report.model_lines(cfg, path, tok):
        print(line)
    files = checkpoint_files(path)
    total = sum(os.path.getsize(f) for f in files)
    print(f"files        {len(files)} safetensors file(s), {report.size(total)}")


def execute(fv: flags.FlagValues, config):
    del config
    if fv.model:
        _model_info(fv.model)
    if fv.bank:
        bank = common.load_bank(fv.bank, checksums=fv.checksums)
        if fv.model:
            print()
        for line in report.bank_lines(bank, fv.bank):
            print(line)
        if fv.model:
            model = common.load_model(fv.model)
            same = bank.spec.fingerprint == model.fingerprint
            print(f"compatible   {'yes' if same else 'NO'}: bank encoded by model "
                  f"{bank.spec.fingerprint}, this model is {model.fingerprint}")
