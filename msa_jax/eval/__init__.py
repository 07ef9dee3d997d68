"""Evaluation kit for the scaling benchmark (issue 12): baselines, haystacks, eval sets, scores.

- `bm25`: BM25 retrieve-then-read (bm25s; `pip install 'msa-jax[eval]'`), the answer read by the
  same model with Memory Interleave's answer prompt;
- `evalset`: the versioned held-out evaluation set (single-hop and two-hop) and its leakage check
  against the trainer's samples;
- `score`: document-id exact match, answer exact match, router recall@k.

The real-text haystack is `msa_jax.data.haystack` (a data leaf). Imports point one way: eval ->
api / inference / training / data, never back.
"""
