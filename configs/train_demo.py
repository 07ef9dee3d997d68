"""The recipe of the bundled demo model (models/msa-tiny-demo): a tiny MSA trained from scratch on
this project's synthetic tasks, on a 2-core CPU, in two stages:

    msa-jax train --config=configs/train_demo_router.py --workdir=runs/demo-router
    msa-jax train --config=configs/train_demo.py --workdir=runs/demo \
        --init_from=runs/demo-router/export

This file is stage 2 (joint training, from stage 1's export); configs/train_demo_router.py is
stage 1 (the router warm-up on single-hop questions) and takes the model and options from here.
Without --init_from this file trains the joint stage from random weights, which does not learn
to route (docs/training.md).

What it trains (docs/msa.md §5-§6, the paper's recipe in spirit):
- a 4-layer Qwen3 (D 128, 4 query / 2 KV heads of 32: router keys 2 x 32 wide, untied LM head,
  embedding initialised N(0, 1)) with router layers 2 and 3, P = 8, and a byte-level BPE
  (msa_jax.data.bpe: one token per word of the synthetic vocabulary, one per digit);
- generative retrieval: single-hop and two-hop fact questions, one sample per retrieval step
  (the model writes `[id]<|object_ref_end|>`; the second hop sees the first document's injected
  text), then the answer step (`<End-of-Retrieve>`, then "The answer to the question is: ...");
  every sample's documents carry fresh random ids of 1-7 digits, so the model copies ids of any
  length (a 100M-token memory has ~10^6 documents);
- 8 documents per sample (one hard negative per hop); the routing loss ranks each positive
  against every document of the batch (in-batch negatives: 128 per question), as large memories
  need;
- stage 1: router warm-up (0.1 L_LM + L_aux); stage 2: joint (L_LM + L_aux: the routing loss
  keeps full weight, unlike the paper's 0.1, because this router starts from scratch);
- held-out persons never appear in training (msa_jax.training.tasks.EntitySplit); the periodic
  evaluation ranks held-out questions among a memory of held-out documents.
"""

import os

from ml_collections import config_dict

from msa_jax.utils import load_python_file


def _base():
    """configs/train_tiny.py, whose sections this recipe changes."""
    return load_python_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "train_tiny.py"))


def get_config() -> config_dict.ConfigDict:
    base = _base()
    c = base.get_config()
    m = c.model
    m.preset = "tiny-msa"
    m.tokenizer = "bpe"
    m.bpe_vocab_size = 1024
    m.vocab_size = 0  # = the tokenizer's
    m.sizes = config_dict.ConfigDict(dict(hidden_size=128, intermediate_size=384, num_layers=4,
                                          num_heads=4, num_kv_heads=2, head_dim=32,
                                          tie_word_embeddings=False))
    # a wide embedding (untied from the LM head): with Qwen3's 0.02 the random layers below the
    # router swamp each token's identity in the router's input and the routing loss sits on its
    # plateau for hundreds of steps (docs/training.md)
    m.embedding_init_std = 1.0
    # query_reduce "mean" (an msa_config option; the reference's default is "max"): a chunk
    # scores by how many question tokens it matches, a signal the router finds in tens of
    # steps, where "max" waits for one token to encode the whole key (docs/training.md)
    m.msa = config_dict.ConfigDict(dict(router_layers=(2, 3), pooling_size=8,
                                        query_reduce="mean"))
    m.top_k_docs = 2

    c.optim.batch_negatives = 128  # routing-query tokens per question, at most
    c.optim.max_segment = 128  # tokens of a document, at most (banded attention)
    c.optim.max_active = 256  # tokens of a question row + target, at most
    # the router sits on a plateau (routing loss ~ ln 128) for the first few hundred steps
    # (docs/training.md): a long warm-up, and the routing loss kept at full weight afterwards
    # (the paper's 0.1 assumes a router that converged in warm-up on a pre-trained backbone)
    # stage 1 (configs/train_demo_router.py) runs the warm-up phase only, stage 2 the main one
    c.optim.warmup = base._phase(steps=0, lr=3e-3, warmup_steps=20, decay="constant",
                                 end_lr=3e-3, lm_weight=0.1, aux_weight=1.0)
    c.optim.main = base._phase(steps=500, lr=2e-3, warmup_steps=20, decay="cosine",
                               end_lr=1e-4, lm_weight=1.0, aux_weight=1.0)

    d = c.data
    d.num_queries = 3000  # per chain length
    del d["hops"]  # an int in train_tiny: one chain length
    d.hops = (1, 2)
    d.with_answer = True
    d.id_digits = 7
    d.docs_per_sample = 8
    d.hard_negatives = 1
    d.batch_size = 16
    d.length_buckets = (576, 704)
    d.doc_buckets = (8,)

    c.eval.every = 250
    c.eval.num_queries = 64
    c.eval.memory_docs = 2000
    c.train.checkpoint_every = 100
    return c
