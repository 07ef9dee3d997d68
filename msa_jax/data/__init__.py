"""Data for MSA: memory corpora, query files, tokenizers and synthetic memory tasks.

No JAX here: everything is plain Python and numpy, so data preparation runs anywhere.
"""

from msa_jax.data.corpus import Document, iter_corpus, load_corpus, save_corpus
from msa_jax.data.queries import (Query, check_references, load_queries, missing_references,
                                  save_queries, without_references)
from msa_jax.data.records import CorpusError
from msa_jax.data.synthetic import make_corpus, make_needle_task, synthetic_token_corpus
from msa_jax.data.tokenizer import (DEFAULT_SPECIALS, ByteTokenizer, HFTokenizer, Tokenizer,
                                    TokenizerError, load_tokenizer)

__all__ = [
    "ByteTokenizer", "CorpusError", "DEFAULT_SPECIALS", "Document", "HFTokenizer", "Query",
    "Tokenizer", "TokenizerError", "check_references", "iter_corpus", "load_corpus",
    "load_queries", "load_tokenizer", "make_corpus", "make_needle_task", "missing_references",
    "save_corpus", "save_queries", "synthetic_token_corpus", "without_references",
]
