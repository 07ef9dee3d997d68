"""Bad input to the public API is refused up front with an MSAError naming the problem, never
turned into a silently wrong result (issue 9 §3). Nothing here compiles a model: every case is
refused before the first JAX computation."""

import math

import numpy as np
import pytest

import msa_jax
from msa_jax.data.tokenizer import ByteTokenizer
from msa_jax.errors import InputError, MSAError
from msa_jax.inference.memory_generate import QueryRow
from msa_jax.memory.bank import BankSpec, MemoryBank

MAX_POSITIONS = 256  # a small max_position_embeddings keeps the too-long inputs small


@pytest.fixture(scope="module")
def model():
    tok = ByteTokenizer()
    head = tuple(tok.encode("<|im_start|>user\n", allow_special=True))
    cfg = msa_jax.preset("tiny-msa", vocab_size=300, pad_token_id=tok.pad_id,
                         eos_token_id=tok.eos_ids, max_position_embeddings=MAX_POSITIONS,
                         msa=msa_jax.MSAConfig(router_layers=(2, 3), pooling_size=8, top_k_docs=2,
                                               prefix_token_ids=head))
    return msa_jax.MSAModel.random(cfg, 0, tok)


@pytest.fixture()
def bank(model):
    """A bank with this model's fingerprint and one (zero) document: enough for the checks that
    come before any computation."""
    cfg = model.cfg
    r, k, h = len(cfg.msa.router_layers), cfg.num_kv_heads, cfg.head_dim
    spec = BankSpec(model.fingerprint, r, k, h, cfg.msa.pooling_size, cfg.dtype)
    prefix = np.zeros((cfg.num_layers, cfg.msa.prefix_len, k, h), np.float32)
    b = MemoryBank(spec, prefix, prefix)
    tiers = np.zeros((r, 1, k, h), np.float32)
    b.append(["d0"], [(5, 6, 7)], ["text"], [1], tiers, tiers, tiers)
    return b


def test_every_user_error_is_an_msa_error():
    for name in ("BankError", "CheckpointError", "ConfigError"):
        assert issubclass(getattr(msa_jax, name), MSAError)
    from msa_jax.data import CorpusError, TokenizerError
    from msa_jax.memory.layout import LayoutError
    assert all(issubclass(e, MSAError) and issubclass(e, ValueError)
               for e in (CorpusError, TokenizerError, LayoutError, InputError))


@pytest.mark.parametrize("bad", [300, 10**6, -1])
def test_encode_refuses_a_token_id_outside_the_vocabulary(model, bad):
    # Today: a NaN bank (the embedding gather reads out of range), NaN also for "ok", which
    # shares the block; then `ask` answers <|pad|>.
    docs = [msa_jax.data.Document("ok", tokens=(5, 6, 7)), [8, 9, bad, 10]]
    if bad < 0:  # negative ids are already refused by Document; DocInput reaches the encoder
        from msa_jax.memory.encoder import DocInput
        docs = [DocInput("ok", (5, 6, 7)), DocInput("1", (8, 9, bad, 10))]
    with pytest.raises(InputError, match=rf"document '1'.*token id {bad} at position 2 is "
                                         r"outside the model's vocabulary 0\.\.299"):
        model.encode_memory(docs, progress=False)


def test_text_is_checked_against_the_model_vocabulary(model):
    # a tokenizer with more ids than the model: "\u00e9" is utf-8 c3 a9, byte ids 7 + 0xc3 = 202
    # and 7 + 0xa9 = 176; a model of 200 ids has no embedding for 202 (after "<|im_start|>[x]. ")
    small = msa_jax.MSAModel(model.cfg.replace(vocab_size=200), model.params, model.tokenizer)
    with pytest.raises(InputError, match=r"document 'x' \(#0\): token id 202 at position 6 is "
                                         r"outside the model's vocabulary 0\.\.199"):
        small.encode_memory({"x": "\u00e9t\u00e9"}, progress=False)


@pytest.mark.parametrize("call", ["call", "generate", "ask_tokens"])
def test_lm_entry_points_refuse_bad_ids(model, bank, call):
    with pytest.raises(InputError, match="token id 300 at position 1"):
        if call == "call":
            model(np.array([[1, 300, 2]]))
        elif call == "generate":
            model.generate([1, 300, 2], max_new_tokens=2)
        else:
            row = QueryRow((1, 300, 2), (0, 0, 0))
            model.ask_tokens([row], bank, max_new_tokens=2)


def test_a_document_longer_than_the_positions_is_refused(model):
    too_long = [7] * (MAX_POSITIONS + 1)
    with pytest.raises(InputError, match=r"document 'long' \(#1, 257 tokens\) needs 257 "
                                         r"positions, more than the model's "
                                         r"max_position_embeddings of 256; split it"):
        model.encode_memory([msa_jax.data.Document("short", tokens=(1, 2)),
                             msa_jax.data.Document("long", tokens=tuple(too_long))],
                            progress=False)


def test_a_huge_text_is_refused_before_it_is_tokenized(model, monkeypatch):
    # 1M characters: today the tokens reach the encoder (one block of 1M tokens: 16 GB, or a
    # hang); now the length alone refuses it, so the tokenizer never sees it.
    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized a text that cannot fit")

    monkeypatch.setattr(model.tokenizer, "encode", no_tokenizing)
    with pytest.raises(InputError, match=r"document 'big' \(#0\) has 1,000,0\d\d characters, "
                                         r"more than 256 tokens"):
        model.encode_memory({"big": "x" * 1_000_000}, progress=False)
    with pytest.raises(InputError, match="the question has 1,000,000 characters"):
        model.ask("y" * 1_000_000, _fake_bank(model))


def _fake_bank(model):
    class _Bank:  # check_bank reads only these
        spec = type("S", (), {"fingerprint": model.fingerprint})()
        num_docs = 1
    return _Bank()


def test_a_text_just_over_the_positions_is_refused_after_tokenizing(model):
    text = "z" * (MAX_POSITIONS - 5)  # fits the character bound; wrapped (+10 tokens) it does not
    with pytest.raises(InputError, match=r"document 'x' \(#0, 261 tokens\) needs 261 positions"):
        model.encode_memory({"x": text}, progress=False)


@pytest.mark.parametrize("prompt_len, new", [(250, 7), (10, 247), (257, 1)])
def test_generate_needs_prompt_plus_new_tokens_to_fit(model, prompt_len, new):
    with pytest.raises(InputError, match=rf"prompt 0 \({prompt_len} tokens\) \+ max_new_tokens "
                                         rf"{new} needs {prompt_len + new} positions"):
        model.generate([5] * prompt_len, max_new_tokens=new)


def test_ask_needs_the_answer_budget_to_fit(model, bank):
    # query offset (6 prefix + 2 top-k) + the question row + 250 answer tokens > 256
    with pytest.raises(InputError, match=r"query row 0 \(query offset 8 \+ \d+ tokens\) needs"):
        model.ask("Where?", bank, interleave=False, answer_tokens=250)
    with pytest.raises(InputError, match=r"Memory Interleave round 1 .* needs \d+ positions"):
        model.ask("Where?", bank, max_new_tokens=100, answer_tokens=100)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=math.nan), "temperature must be finite"),
    (dict(temperature=math.inf), "temperature must be finite"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
])
def test_generate_refuses_bad_sampling_settings(model, kwargs, message):
    with pytest.raises(InputError, match=message):
        model.generate([5, 6], **kwargs)
