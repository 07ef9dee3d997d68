"""BM25 retrieve-then-read, the benchmark's baseline (b): a BM25 index over the memory documents'
texts picks the top-k documents; their text goes into the context of the same model, in the
prompt Memory Interleave builds for its answer step; the model writes the answer.

    index = BM25Index.build(documents)          # Documents with text; a progress bar
    ids = index.retrieve(question, k=2)         # document ids, best first
    answer = read(model, question, ids, texts)  # texts: id -> text (a lazy Mapping is fine)

Scoring is the library's (bm25s, `pip install 'msa-jax[eval]'`) with its defaults: Lucene BM25,
k1 = 1.5, b = 0.75; text lowercased, split into words of two or more word characters, English
stopwords dropped, no stemming. Ties at the k-th place go to the earlier document (bm25s's own
top-k breaks them arbitrarily).

Memory (10^5-10^6 documents): the corpus is tokenized in chunks of `chunk_docs` documents into one
flat int32 array (4 bytes per kept word) and never held as text. The index keeps, per distinct
(document, word) pair, a float32 score and an int32 document index (8 bytes); building briefly
needs about 20 bytes per pair more (bm25s's score, document and word arrays, then the sparse
matrix); the vocabulary is a dict (~100 bytes per distinct word) and the ids a list of strings.
`BM25Index.nbytes` reports the arrays.

The read prompt (see `answer_prompt`): the question row of a second interleave round whose first
round named exactly `doc_ids` (`[3][7]<|object_ref_end|>`) and had their text injected
(`[3]. {text}\\n` each, then `<|object_ref_end|>`), the round's `<End-of-Retrieve>`, then the
answer intro. The chat prefix sits at positions 0..h-1 and the prompt from `msa.query_offset` on,
as in Memory Interleave; no memory is attached.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from msa_jax.data.corpus import Document
from msa_jax.data.template import PromptTemplate, chat_prefix
from msa_jax.data.tokenizer import check_positions, check_token_ids
from msa_jax.errors import InputError
from msa_jax.inference.generate import (bucket, left_pad, prefill, prompt_positions,
                                        sample_tokens)
from msa_jax.inference.interleave import final_answer, question_row
from msa_jax.inference.sampling import Sampling
from msa_jax.model.cache import empty_cache
from msa_jax.training.samples import retrieval_target
from msa_jax.utils import progress


def _bm25s():
    try:
        import bm25s
        import bm25s.tokenization
    except ImportError:
        raise InputError("the BM25 baseline needs the bm25s package: pip install "
                         "'msa-jax[eval]' (or pip install bm25s)") from None
    return bm25s


class _PackedIds(Sequence):
    """Documents' word ids in one flat int32 array (bm25s iterates them as lists)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets  # offsets [N + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.flat[self.offsets[i]:self.offsets[i + 1]].tolist()

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index."""
    n = len(scores)
    kth = np.partition(scores, n - k)[n - k]
    cand = np.flatnonzero(scores >= kth)
    return cand[np.lexsort((cand, -scores[cand]))][:k]


class BM25Index:
    """A bm25s index over documents' texts, answering with document ids."""

    def __init__(self, retriever, tokenizer, doc_ids: Sequence[str]):
        self.retriever, self.tokenizer, self.doc_ids = retriever, tokenizer, list(doc_ids)

    @classmethod
    def build(cls, documents: Iterable[Document], *, chunk_docs: int = 10_000,
              total: int | None = None, show_progress: bool = True, k1: float = 1.5,
              b: float = 0.75, method: str = "lucene") -> "BM25Index":
        """Index `documents` (an iterable, read once, in chunks of `chunk_docs`); `total` (the
        number of documents, when known) sizes the progress bar. Every document needs text."""
        bm25s = _bm25s()
        if chunk_docs < 1:
            raise InputError(f"chunk_docs must be >= 1, got {chunk_docs}")
        tok = bm25s.tokenization.Tokenizer(stopwords="en")
        ids, flats, lengths, chunk = [], [], [], []

        def flush():
            words = tok.tokenize(chunk, update_vocab=True, return_as="ids", show_progress=False)
            lengths.extend(map(len, words))
            flats.append(np.fromiter((w for doc in words for w in doc), np.int32))
            chunk.clear()

        bar = progress(total=total, desc="BM25 tokenize", unit="doc", enabled=show_progress)
        with bar:
            for i, doc in enumerate(documents):
                if doc.text is None:
                    raise InputError(f"document {doc.id!r} (#{i}) has token ids but no text: "
                                     "BM25 indexes text")
                ids.append(doc.id)
                chunk.append(doc.text)
                if len(chunk) == chunk_docs:
                    flush()
                    bar.update(chunk_docs)
            n_last = len(chunk)
            if chunk:
                flush()
            bar.update(n_last)
        if not ids:
            raise InputError("BM25Index.build: no documents to index")
        if len(set(ids)) != len(ids):
            raise InputError("BM25Index.build: repeated document ids")
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        packed = _PackedIds(np.concatenate(flats), offsets)
        retriever = bm25s.BM25(k1=k1, b=b, method=method)
        retriever.index(bm25s.tokenization.Tokenized(ids=packed, vocab=tok.get_vocab_dict()),
                        show_progress=show_progress)
        return cls(retriever, tok, ids)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def nbytes(self) -> int:
        """Bytes of the index's score matrix (data, indices, indptr)."""
        s = self.retriever.scores
        return int(s["data"].nbytes + s["indices"].nbytes + s["indptr"].nbytes)

    def scores(self, question: str) -> np.ndarray:
        """float32 [num_docs]: the BM25 score of every document for `question` (words not in
        the index are ignored; a question of none scores every document 0)."""
        words = self.tokenizer.tokenize([question], update_vocab=False, return_as="ids",
                                        show_progress=False, allow_empty=False)[0]
        return self.retriever.get_scores_from_ids(words)

    def retrieve(self, question: str, k: int) -> list[str]:
        """Ids of the `k` best documents for `question`, best first."""
        if not 1 <= k <= self.num_docs:
            raise InputError(f"k must be in [1, {self.num_docs}] (the indexed documents), got {k}")
        return [self.doc_ids[i] for i in _top_k(self.scores(question), k)]


def answer_prompt(tokenizer, question: str, doc_ids: Sequence[str], texts: Mapping[str, str],
                  tpl: PromptTemplate = PromptTemplate()) -> list[int]:
    """Token ids of Memory Interleave's answer step after one round that named `doc_ids` and
    injected their text: that round's question row, `<End-of-Retrieve>`, the answer intro."""
    missing = [d for d in doc_ids if d not in texts]
    if missing:
        raise InputError(f"documents {missing[:3]} have no text to read")
    block = "".join(tpl.injected.format(id=d, text=texts[d]) for d in doc_ids)
    history = [(retrieval_target(doc_ids, tpl), block + tpl.round_end)] if doc_ids else []
    row = question_row(tokenizer, tpl, question, history)
    tail = tpl.end_of_retrieve + tpl.answer_intro.format(question=question)
    return list(row.tokens) + tokenizer.encode(tail, allow_special=True)


def read_inputs(model, prompt: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, mask, positions) [1, T] of the chat prefix + `prompt`, left padded: the prefix at
    positions 0..h-1, the prompt from `msa.query_offset` on (as Memory Interleave's query)."""
    cfg = model.cfg
    head = list(cfg.msa.prefix_token_ids) if cfg.is_msa else \
        list(chat_prefix(model.tokenizer, model.template))
    offset = cfg.msa.query_offset if cfg.is_msa else len(head)
    length = bucket(len(head) + len(prompt))
    tokens, mask = left_pad([head + list(prompt)], length, cfg.pad_token_id or 0)
    positions = prompt_positions(mask)
    positions[:, length - len(prompt):] += offset - len(head)
    return tokens, mask, positions


def read(model, question: str, doc_ids: Sequence[str], texts: Mapping[str, str],
         answer_tokens: int = 128) -> str:
    """The answer `model` (an `msa_jax.MSAModel`) writes, greedily, from the text of
    `doc_ids` in its context (`answer_prompt`), stripped as Memory Interleave strips it."""
    tok, tpl, cfg = model.tokenizer, model.template, model.cfg
    if tok is None:
        raise InputError("read needs a model with a tokenizer")
    if not question.strip():
        raise InputError("the question is empty")
    prompt = answer_prompt(tok, question, doc_ids, texts, tpl)
    check_token_ids(prompt, cfg.vocab_size, "the BM25 read prompt")
    tokens, mask, positions = read_inputs(model, prompt)
    check_positions(int(positions.max()) + 1 + answer_tokens, cfg.max_position_embeddings,
                    f"the BM25 read prompt ({len(prompt):,} tokens) + {answer_tokens} answer "
                    "tokens", "retrieve fewer or shorter documents")
    pad = cfg.pad_token_id or 0
    cache = empty_cache(cfg, 1, tokens.shape[1] + bucket(answer_tokens, 8))
    logits, cache, nxt = prefill(cfg, model.params, cache, tokens, mask, positions)
    stops = [tok.token_id(tpl.answer_end)] if tpl.answer_end in tok.special_tokens else []
    new, _ = sample_tokens(cfg, model.params, cache, logits, nxt, answer_tokens, Sampling(),
                           stops + list(tok.eos_ids), pad)
    return final_answer(model.decode(new[0]), tpl)
