"""The errors msa-jax raises for bad input: every one is an `MSAError` (a `ValueError`).

An `MSAError` means the input (a file, a flag, a document, a question, a checkpoint) cannot be
used, and its message names the problem in one line; anything else escaping the library is a bug.
The `msa-jax` command reports the two differently (exit code 1 vs 3, see `msa_jax.cli.common`).
The classes are re-exported where they are raised (`msa_jax.memory.bank.BankError`, ...).

Imports nothing of msa_jax: every layer of the package may raise these.
"""

import json
import sys
from typing import Any


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


def parse_json(text: str | bytes, where: str, error: type[MSAError] = MSAError, *,
               at_line: bool = True, extra_data_hint: str = "") -> Any:
    """json.loads(text), where every way it can fail raises `error` naming `where`: malformed
    JSON (with the line, if `at_line`, and the column), invalid utf-8, nesting too deep for
    Python's recursion limit, an integer of more digits than Python converts."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        line = f", line {e.lineno}" if at_line else ""
        hint = f" {extra_data_hint}" if extra_data_hint and e.msg == "Extra data" else ""
        raise error(f"{where}{line}: malformed JSON: {e.msg} (column {e.colno}){hint}") from None
    except UnicodeDecodeError as e:
        raise error(f"{where}: not valid utf-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply (JSON arrays or objects nested beyond Python's "
                    f"recursion limit of {sys.getrecursionlimit()})") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise error(f"{where}: a JSON integer has more than {sys.get_int_max_str_digits()} "
                    "digits") from None
