"""The errors msa-jax raises for bad input: every one is an `MSAError` (a `ValueError`).

An `MSAError` means the input (a file, a flag, a document, a question, a checkpoint) cannot be
used, and its message names the problem in one line; anything else escaping the library is a bug.
The `msa-jax` command reports the two differently (exit code 1 vs 3, see `msa_jax.cli.common`).
The classes are re-exported where they are raised (`msa_jax.memory.bank.BankError`, ...).

Imports nothing: every layer of the package may raise these.
"""


class MSAError(ValueError):
    """Bad input, not a bug: the message names the file, tensor, document, flag or setting."""


class ConfigError(MSAError):
    """A configuration that cannot describe a valid model, or a setting outside its bounds."""


class CheckpointError(MSAError):
    """A checkpoint that cannot be read or does not match the model."""


class CorpusError(MSAError):
    """A corpus or query file (or record) that cannot be used; the message names the place."""


class TokenizerError(MSAError):
    """A tokenizer file or setting that cannot be used; the message names the file or token."""


class BankError(MSAError):
    """Bad use of a memory bank (unknown document, bank from another model, corrupt files, ...)."""


class LayoutError(MSAError):
    """Documents that cannot be packed as asked."""


class InputError(MSAError):
    """A document, question or prompt the model cannot take: a token id outside the vocabulary,
    more tokens than the model has positions for, an empty question, no tokenizer for text."""
