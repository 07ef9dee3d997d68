"""The `msa-jax` command line: one absl entry point (`msa_jax.cli.main`) with subcommands.

    msa-jax help                      list the commands
    msa-jax <command> --help          the flags of one command
    msa-jax demo                      the bundled trained tiny model answering from a 1M-token memory
    msa-jax smoke                     every stage of the pipeline on a tiny random model

Each command lives in `msa_jax/cli/commands/<name>.py`; shared flag handling, model loading and
error reporting are in `common.py`, the printed tables in `report.py`. The CLI only calls the
public library (`msa_jax.api`, `msa_jax.convert`, `msa_jax.memory.store`, `msa_jax.data`).
"""
