"""One module per `msa-jax` subcommand.

Each module has NAME, SUMMARY (one line for `msa-jax help`), USAGE (the synopsis), a docstring
(the `--help` text), `define_flags(fv, argv)` and `execute(fv, config) -> exit code or None`.
"""
