"""Tokenizers: byte-level round trips and specials, the `tokenizers` wrapper, folder dispatch."""

import json
import re
import sys

import pytest

from msa_jax.data import (DEFAULT_SPECIALS, ByteTokenizer, HFTokenizer, TokenizerError,
                          load_tokenizer)
from msa_jax.data.tokenizer import Tokenizer

TEXTS = ["", "plain ascii", "naïve café — 東京 🚀 👩‍👩‍👧", "e\u0301 combining",
         "\x00\x7f\n\r\t", "<|im_end|> looks special",
         "[4]. doc text[4]<|im_end|><End-of-Retrieve>"]


# ----------------------------------------------------------------------------- ByteTokenizer


def test_byte_layout():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer)
    for s in ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
              "<|object_ref_end|>", "<End-of-Retrieve>"):
        assert s in DEFAULT_SPECIALS
    n = len(DEFAULT_SPECIALS)
    assert tok.vocab_size == n + 256
    assert tok.pad_id == 0 == tok.token_id("<|pad|>")
    assert tok.special_tokens == {s: i for i, s in enumerate(DEFAULT_SPECIALS)}
    assert tok.eos_ids == (tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>"))
    assert tok.encode("A") == [n + 65]
    assert tok.encode("é") == [n + 0xC3, n + 0xA9]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    plain = tok.encode(text)
    assert all(i >= len(DEFAULT_SPECIALS) for i in plain)  # specials never parsed by default
    assert len(plain) == len(text.encode("utf-8"))
    assert tok.decode(plain) == text
    assert tok.decode(tok.encode(text, allow_special=True)) == text


def test_byte_allow_special_finds_specials():
    tok = ByteTokenizer()
    ids = tok.encode("[4]. x[4]<|im_end|><End-of-Retrieve>ok", allow_special=True)
    im_end, eor = tok.token_id("<|im_end|>"), tok.token_id("<End-of-Retrieve>")
    assert ids[-4:-2] == [im_end, eor]
    assert ids[:-4] == tok.encode("[4]. x[4]") and ids[-2:] == tok.encode("ok")
    assert tok.decode(ids, skip_special=True) == "[4]. x[4]ok"
    assert tok.decode(ids) == "[4]. x[4]<|im_end|><End-of-Retrieve>ok"


def test_byte_longest_special_wins():
    tok = ByteTokenizer(["<p>", "<a>", "<a>b>"])
    assert tok.encode("<a>b><a>", allow_special=True) == [2, 1]


def test_byte_decode_invalid_utf8_and_errors():
    tok = ByteTokenizer()
    n = len(DEFAULT_SPECIALS)
    assert tok.decode([n + 0xFF, n + 65]) == "\ufffdA"
    assert tok.decode([n + 0xE6, n + 0x9D]) == "\ufffd"  # truncated character
    with pytest.raises(ValueError, match=f"token id {n + 256} is out of range"):
        tok.decode([n + 256])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.decode([-1])
    with pytest.raises(KeyError, match="'<think>' is not a special token"):
        tok.token_id("<think>")
    for specials in ([], ["<a>", "<a>"], ["<a>", ""]):
        with pytest.raises(TokenizerError):
            ByteTokenizer(specials)


def test_byte_save_load(tmp_path):
    tok = ByteTokenizer(DEFAULT_SPECIALS + ("<extra>",))
    path = tok.save(tmp_path / "ckpt")
    assert json.loads(open(path).read()) == {"kind": "byte", "specials": list(tok.special_tokens)}
    for source in (tmp_path / "ckpt", path):
        loaded = load_tokenizer(source)
        assert isinstance(loaded, ByteTokenizer)
        assert loaded.special_tokens == tok.special_tokens


@pytest.mark.parametrize("content, message", [
    ('{"kind": "bpe"}', 'expected an object with "kind": "byte"'),
    ('{"kind": "byte", "specials": "x"}', '"specials" must be a list'),
    ('{"kind": "byte", "specials": ["<a>", "<a>"]}', "repeated strings"),
    ('{"kind": "byte",\n "specials": [}', "line 2: malformed JSON"),
])
def test_byte_bad_file(tmp_path, content, message):
    (tmp_path / "msa_tokenizer.json").write_text(content)
    with pytest.raises(TokenizerError, match="msa_tokenizer.json") as info:
        load_tokenizer(tmp_path)
    assert message in str(info.value)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for msa_tokenizer.json and tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokenizer(tmp_path / "missing")


def test_missing_tokenizers_package_is_explained(tmp_path, monkeypatch):
    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match="pip install tokenizers"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------- HFTokenizer

HF_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<End-of-Retrieve>"]


def _tiny_bpe(tokenizers):
    """A byte-level BPE trained in-process on a few sentences (no downloads)."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=HF_SPECIALS,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the memory of the model", "sparse attention over memory"] * 5,
                            trainer)
    tok.add_tokens(["<think>"])  # an added token that is not special
    return tok


@pytest.fixture
def hf_dir(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    _tiny_bpe(tokenizers).save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_hf_round_trip_and_specials(hf_dir):
    tok = load_tokenizer(hf_dir)
    assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
    assert set(tok.special_tokens) == set(HF_SPECIALS) | {"<think>"}
    assert tok.vocab_size == max(tok.special_tokens.values()) + 1
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    text = "memory<|im_end|>tail"
    plain = tok.encode(text)
    assert tok.token_id("<|im_end|>") not in plain
    parsed = tok.encode(text, allow_special=True)
    assert tok.token_id("<|im_end|>") in parsed
    assert tok.decode(parsed) == text
    assert tok.decode(parsed, skip_special=True) == "memorytail"
    with pytest.raises(KeyError, match=re.escape("'<|pad|>' is not a special token")):
        tok.token_id("<|pad|>")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])


def test_hf_pad_and_eos(hf_dir):
    tok = load_tokenizer(hf_dir)
    assert tok.pad_id == tok.token_id("<|endoftext|>")  # no <|pad|>: falls back
    assert tok.eos_ids == (tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>"))

    (hf_dir / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>"}))
    (hf_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 2]}))
    tok = load_tokenizer(hf_dir / "tokenizer.json")
    assert tok.pad_id == tok.token_id("<|im_start|>")
    assert tok.eos_ids == (0, 2)  # the config's <|im_end|> (id 2) is already listed

    tok = HFTokenizer.from_file(hf_dir, pad_token="<End-of-Retrieve>", eos_tokens=["<think>"])
    assert tok.pad_id == tok.token_id("<End-of-Retrieve>")
    assert tok.eos_ids == (tok.token_id("<think>"),)
    with pytest.raises(TokenizerError,
                       match="tokenizer.json: token '<nope>' is not in the vocabulary"):
        HFTokenizer.from_file(hf_dir, pad_token="<nope>")


def test_hf_save_and_bad_file(hf_dir, tmp_path):
    tok = load_tokenizer(hf_dir)
    saved = load_tokenizer(tok.save(tmp_path / "copy"))
    assert saved.encode("sparse memory") == tok.encode("sparse memory")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(TokenizerError, match="bad/tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad")
