"""Tiny random models with the byte tokenizer, shared by the tests."""

import msa_jax
from msa_jax.data import ByteTokenizer
from msa_jax.data.template import CHAT_HEAD


def byte_model(preset: str = "tiny-msa", seed: int = 0, **msa_overrides) -> msa_jax.MSAModel:
    """A random `preset` model whose vocabulary is the byte tokenizer's. With `msa_overrides`
    (MSAConfig fields) its MSA config is replaced, the chat head as prefix."""
    tok = ByteTokenizer()
    kw = {}
    if msa_overrides:
        head = tuple(tok.encode(CHAT_HEAD, allow_special=True))
        kw["msa"] = msa_jax.MSAConfig(prefix_token_ids=head, **msa_overrides)
    cfg = msa_jax.preset(preset, vocab_size=tok.vocab_size, pad_token_id=tok.pad_id,
                         eos_token_id=tok.eos_ids, **kw)
    return msa_jax.MSAModel.random(cfg, seed, tok)
