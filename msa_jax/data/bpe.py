"""A small byte-level BPE tokenizer trained with Hugging Face `tokenizers` on the synthetic tasks'
text, for models trained here from scratch (the demo model, configs/train_demo.py).

- ids 0..S-1 are MSA's special tokens in `SPECIAL_TOKENS` order (id 0 = pad), as in the byte
  tokenizer, so the chat prefix and the interleave markers are single tokens;
- digits are split one per token (a document id `[40213]` is `[`, 4, 0, 2, 1, 3, `]`): the model
  copies ids digit by digit, whatever their length;
- byte-level: any text encodes (real-text haystacks included), nothing maps to an unknown token.

`train_bpe(texts, vocab_size)` is deterministic for the same texts (same merges, same ids);
`synthetic_training_text(seed)` is the text it is trained on for the synthetic tasks: fact
sentences of every vocabulary word, the question and prompt templates, document wrappers.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from msa_jax.data.template import PromptTemplate, SPECIAL_TOKENS
from msa_jax.data.tokenizer import HFTokenizer, _import_tokenizers
from msa_jax.errors import ConfigError


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A byte-level BPE of `vocab_size` ids (special tokens included) trained on `texts`."""
    tk = _import_tokenizers()
    floor = len(SPECIAL_TOKENS) + 256
    if vocab_size < floor:
        raise ConfigError(f"BPE vocab_size must be >= {floor} (specials + 256 bytes), "
                          f"got {vocab_size}")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Digits(individual_digits=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):  # the templates rely on these ids
        if tok.token_to_id(s) != i:
            raise AssertionError(f"special token {s!r} got id {tok.token_to_id(s)}, not {i}")
    return HFTokenizer(tok)


def synthetic_training_text(num_docs: int = 4000, seed: int = 0) -> list[str]:
    """Text of the synthetic tasks (msa_jax.data.synthetic) wrapped as training rows are, for
    `train_bpe`: documents, single- and two-hop questions, the prompt strings, the answers."""
    from msa_jax.data.synthetic import make_needle_task  # a leaf: plain numpy

    tpl = PromptTemplate()
    out = []
    for hops in (1, 2):
        docs, queries = make_needle_task(num_docs, num_docs // 4, seed=seed + hops, hops=hops)
        ids = np.random.default_rng(seed).integers(0, 10**7, size=len(docs))
        out += [tpl.format_document(str(i), d.text) + tpl.injected.format(id=i, text=d.text)
                for i, d in zip(ids.tolist(), docs)]
        out += [tpl.prefix + q.question + tpl.question_suffix + tpl.tail
                + tpl.answer_intro.format(question=q.question)
                + f"{tpl.answer_prefix} {q.answers[0]}{tpl.answer_end}" for q in queries]
    return out
