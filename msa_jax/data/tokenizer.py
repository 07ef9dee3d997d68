"""Text <-> token ids without torch: a byte-level tokenizer and a Hugging Face `tokenizers` wrapper.

Both implement `Tokenizer`. User text is never scanned for special-token strings unless the
caller asks (`allow_special=True`), so a document that happens to contain "<|im_end|>" cannot
end a chat turn. The special strings MSA's templates use (docs/msa.md §3, §5) are in
`DEFAULT_SPECIALS` (= msa_jax/data/template.py `SPECIAL_TOKENS`).

- `ByteTokenizer`: ids 0..S-1 are the S special tokens (id 0 is the pad token), then the 256
  utf-8 bytes. Needs no files; saved as `msa_tokenizer.json` so a checkpoint folder can carry it.
- `HFTokenizer`: a `tokenizer.json` (e.g. Qwen3's) through the `tokenizers` package, imported only
  when used.
- `load_tokenizer(folder)` picks whichever of the two the folder holds.
"""

from __future__ import annotations

import abc
import json
import operator
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from msa_jax.data.template import END_OF_TEXT, IM_END, PAD, SPECIAL_TOKENS
from msa_jax.errors import InputError, TokenizerError, parse_json

BYTE_TOKENIZER_FILE = "msa_tokenizer.json"
HF_TOKENIZER_FILE = "tokenizer.json"
DEFAULT_SPECIALS = SPECIAL_TOKENS
# Tokens that end generation / pad a batch when the files do not say (first present wins for pad).
EOS_CANDIDATES = (IM_END, END_OF_TEXT, "</s>", "<eos>")
PAD_CANDIDATES = (PAD, "<pad>", "[PAD]", END_OF_TEXT)


class Tokenizer(abc.ABC):
    """What the rest of msa-jax needs from a tokenizer."""

    @abc.abstractmethod
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it are parsed only if `allow_special`."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; special tokens are written as their strings unless `skip_special`."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included)."""

    @property
    @abc.abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """A fresh dict {special string: id}."""

    @property
    @abc.abstractmethod
    def pad_id(self) -> int:
        """The id used to pad batches."""

    @property
    @abc.abstractmethod
    def eos_ids(self) -> tuple[int, ...]:
        """Ids that end generation."""

    @abc.abstractmethod
    def save(self, directory: str | os.PathLike) -> str:
        """Write the tokenizer's file into `directory` (created if needed); returns its path."""

    @property
    def max_token_chars(self) -> int | None:
        """The most characters one token can stand for (None: unbounded or unknown), so that a
        text of more than `n * max_token_chars` characters is known to exceed n tokens before it
        is tokenized."""
        return None

    def token_id(self, token: str) -> int:
        """Id of a special-token string; `KeyError` naming it if the tokenizer lacks it."""
        specials = self.special_tokens
        if token not in specials:
            known = ", ".join(sorted(specials)[:20])
            raise KeyError(f"{token!r} is not a special token of this tokenizer (known: {known})")
        return specials[token]


def _check_id(i: Any, vocab_size: int, owner: str) -> int:
    i = operator.index(i)
    if not 0 <= i < vocab_size:
        raise TokenizerError(f"token id {i} is out of range for {owner} (vocab size {vocab_size})")
    return i


def check_token_ids(ids: Any, vocab_size: int, what: str) -> np.ndarray:
    """`ids` (any sequence or array of ints) as an int64 array, after checking that every id is
    in 0..vocab_size-1: an id outside the embedding table would read NaN (JAX gathers out of
    range with a fill value) and poison every document packed in the same block. The error names
    `what` ("document 'd1'"), the first bad id and its position."""
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError):
        arr = np.zeros(1, object)
    if arr.size == 0:
        return arr.astype(np.int64).reshape(-1)
    if not np.issubdtype(arr.dtype, np.integer):  # floats, booleans, ints beyond 64 bits
        raise InputError(f"{what}: token ids must be integers in 0..{vocab_size - 1}")
    flat = arr.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= vocab_size))
    if bad.size:
        more = f"; {bad.size} such ids in all" if bad.size > 1 else ""
        raise InputError(f"{what}: token id {int(flat[bad[0]])} at position {int(bad[0])} is "
                         f"outside the model's vocabulary 0..{vocab_size - 1}{more}")
    return arr.astype(np.int64)


def check_positions(needed: int, limit: int, what: str, advice: str = "") -> None:
    """InputError unless `needed` positions fit the model's `limit` (max_position_embeddings)."""
    if needed > limit:
        advice = f"; {advice}" if advice else ""
        raise InputError(f"{what} needs {needed:,} positions, more than the model's "
                         f"max_position_embeddings of {limit:,}{advice}")


class ByteTokenizer(Tokenizer):
    """utf-8 bytes plus named special tokens; `decode(encode(text)) == text` for any text.

    Ids: `specials[i]` -> i (so `specials[0]`, `<|pad|>` by default, is the pad id), byte b ->
    len(specials) + b. Invalid utf-8 byte runs (possible in generated ids) decode with
    replacement characters.
    """

    def __init__(self, specials: Sequence[str] = DEFAULT_SPECIALS):
        specials = tuple(specials)
        if not specials or not all(isinstance(s, str) and s for s in specials):
            raise TokenizerError("specials must be non-empty strings (the first is the pad "
                                 f"token), got {specials!r}")
        if len(set(specials)) != len(specials):
            raise TokenizerError(f"specials has repeated strings: {specials!r}")
        self._specials = specials
        self._ids = {s: i for i, s in enumerate(specials)}
        # Longest first, so a special that is a prefix of another never shadows it.
        by_length = sorted(specials, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, by_length)))

    def __repr__(self) -> str:
        return f"ByteTokenizer(specials={self._specials!r})"

    @property
    def vocab_size(self) -> int:
        return len(self._specials) + 256

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def max_token_chars(self) -> int:
        return max(1, *map(len, self._specials))  # a byte is at most one character

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return tuple(self._ids[s] for s in EOS_CANDIDATES if s in self._ids)

    def _bytes(self, text: str) -> list[int]:
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return (raw.astype(np.int64) + len(self._specials)).tolist()

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        if not allow_special:
            return self._bytes(text)
        ids, start = [], 0
        for match in self._pattern.finditer(text):
            ids += self._bytes(text[start:match.start()])
            ids.append(self._ids[match.group()])
            start = match.end()
        return ids + self._bytes(text[start:])

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        offset, pieces, run = len(self._specials), [], bytearray()
        for i in ids:
            i = _check_id(i, self.vocab_size, "ByteTokenizer")
            if i >= offset:
                run.append(i - offset)
                continue
            if run:
                pieces.append(run.decode("utf-8", errors="replace"))
                run.clear()
            if not skip_special:
                pieces.append(self._specials[i])
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def save(self, directory: str | os.PathLike) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, BYTE_TOKENIZER_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"kind": "byte", "specials": list(self._specials)}, f, indent=1)
            f.write("\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ByteTokenizer":
        """From a `msa_tokenizer.json` file or the folder holding one."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, BYTE_TOKENIZER_FILE)
        config = _read_json(path)
        if not isinstance(config, dict) or config.get("kind") != "byte":
            raise TokenizerError(f"{path}: expected an object with \"kind\": \"byte\"")
        specials = config.get("specials")
        if not isinstance(specials, list):
            raise TokenizerError(f"{path}: \"specials\" must be a list of strings")
        try:
            return cls(specials)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None


def _read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return parse_json(f.read(), path, TokenizerError)


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError("HFTokenizer needs the Hugging Face `tokenizers` package, which is not "
                          "installed: pip install tokenizers") from e
    return tokenizers


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer`; its added tokens (special or not) are the special tokens.

    `encode` never adds template tokens (`add_special_tokens=False`). Without `allow_special`,
    added tokens marked special are encoded as plain text; added tokens *not* marked special
    (Qwen3's `<think>`, for example) are always matched, as in Hugging Face.
    `pad_token` / `eos_tokens` (strings or ids) override the defaults: the first of
    `PAD_CANDIDATES` and all of `EOS_CANDIDATES` the vocabulary has.
    """

    def __init__(self, tokenizer: Any, *, pad_token: str | int | None = None,
                 eos_tokens: Sequence[str | int] | None = None):
        tokenizers = _import_tokenizers()
        self._tok = tokenizer
        self._plain = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._plain.encode_special_tokens = True
        added = tokenizer.get_added_tokens_decoder()
        self._specials = {tok.content: i for i, tok in sorted(added.items())}
        if pad_token is None:
            pad_token = next((s for s in PAD_CANDIDATES if s in self._specials), None)
        self._pad_id = None if pad_token is None else self._resolve(pad_token)
        if eos_tokens is None:
            eos_tokens = [s for s in EOS_CANDIDATES if s in self._specials]
        self._eos_ids = tuple(dict.fromkeys(self._resolve(t) for t in eos_tokens))
        self._max_token_chars: int | None = 0  # computed on first use

    def _resolve(self, token: str | int) -> int:
        if isinstance(token, str):
            i = self._tok.token_to_id(token)
            if i is None:
                raise TokenizerError(f"token {token!r} is not in the vocabulary")
            return i
        return _check_id(token, self.vocab_size, "HFTokenizer")

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, pad_token: str | int | None = None,
                  eos_tokens: Sequence[str | int] | None = None) -> "HFTokenizer":
        """From a `tokenizer.json` (or its folder).

        The pad and eos tokens come from the arguments, else from a `tokenizer_config.json`
        (`pad_token`, `eos_token`) and `generation_config.json` (`eos_token_id`) beside it, else
        from the class defaults.
        """
        tokenizers = _import_tokenizers()
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, HF_TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        try:
            tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from None
        folder = os.path.dirname(path)
        settings = _hf_settings(folder)
        if pad_token is not None:
            settings["pad_token"] = pad_token
        if eos_tokens is not None:
            settings["eos_tokens"] = eos_tokens
        try:
            return cls(tok, **settings)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, specials={len(self._specials)})"

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def pad_id(self) -> int:
        if self._pad_id is None:
            raise TokenizerError("this tokenizer has no pad token; "
                                 "pass pad_token=... to HFTokenizer")
        return self._pad_id

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self._eos_ids

    @property
    def max_token_chars(self) -> int | None:
        """The longest vocabulary string (a byte-level token's characters stand for one byte
        each, so it covers at most that many characters of text); None if the model has an
        unknown token, which may stand for any number of characters."""
        if self._max_token_chars == 0:
            model = self._tok.model
            unknown = getattr(model, "unk_token", None) is not None or \
                getattr(model, "unk_id", None) is not None
            vocab = self._tok.get_vocab(with_added_tokens=True)
            self._max_token_chars = None if unknown else max(map(len, vocab), default=1)
        return self._max_token_chars

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        tok = self._tok if allow_special else self._plain
        return tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        ids = [_check_id(i, self.vocab_size, "HFTokenizer") for i in ids]
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    def save(self, directory: str | os.PathLike) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, HF_TOKENIZER_FILE)
        self._tok.save(path)
        return path


def _hf_settings(folder: str) -> dict[str, Any]:
    """pad/eos settings from the Hugging Face config files in `folder`, where present."""
    def content(token):  # tokenizer_config spells tokens as strings or {"content": ...}
        return token.get("content") if isinstance(token, dict) else token

    settings: dict[str, Any] = {}
    config_path = os.path.join(folder, "tokenizer_config.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    if not isinstance(config, dict):
        raise TokenizerError(f"{config_path}: expected a JSON object")
    if content(config.get("pad_token")):
        settings["pad_token"] = content(config["pad_token"])
    eos: list[str | int] = []
    generation_path = os.path.join(folder, "generation_config.json")
    if os.path.isfile(generation_path):
        generation = _read_json(generation_path)
        ids = generation.get("eos_token_id") if isinstance(generation, dict) else None
        eos += ids if isinstance(ids, list) else [ids] if isinstance(ids, int) else []
    if content(config.get("eos_token")):
        eos.append(content(config["eos_token"]))
    if eos:
        settings["eos_tokens"] = eos
    return settings


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer in a checkpoint folder: `msa_tokenizer.json` -> `ByteTokenizer`, else
    `tokenizer.json` -> `HFTokenizer`. `path` may also name one of those files."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if os.path.basename(path) == BYTE_TOKENIZER_FILE:
            return ByteTokenizer.load(path)
        return HFTokenizer.from_file(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isfile(os.path.join(path, BYTE_TOKENIZER_FILE)):
        return ByteTokenizer.load(path)
    if os.path.isfile(os.path.join(path, HF_TOKENIZER_FILE)):
        return HFTokenizer.from_file(path)
    raise FileNotFoundError(f"{path}: no tokenizer found (looked for {BYTE_TOKENIZER_FILE} and "
                            f"{HF_TOKENIZER_FILE})")
