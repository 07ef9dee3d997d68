"""A reading stage for the demo model (an experiment after stage 2, docs/training.md): the model
learns to copy a document's id out of its pooled chunks, one document at a time.

    msa-jax train --config=configs/train_demo_read.py --workdir=runs/demo-read \
        --init_from=runs/demo/export

The model and options of configs/train_demo.py, with: one document per sample (the question's
own; in-batch negatives still train the router) and top-1 selection, so the memory a step
reads holds exactly the document whose id it must write; single-hop retrieval steps only (no
answer); short rows (buckets of 128 and 192 tokens: ~85 real tokens a row). At the end of
stage 2 the model wrote the ids' digits at chance (2.5% teacher-forced, docs/training.md); this
stage teaches the copy that the joint stage, where the right document is one of the two read,
did not start in 500 steps.
"""

import os

from msa_jax.utils import load_python_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo.py")).get_config()
    c.model.top_k_docs = 1
    d = c.data
    d.docs_per_sample = 1
    d.hard_negatives = 0
    d.hops = (1,)
    d.with_answer = False
    d.num_queries = 8000
    d.length_buckets = (128, 192)
    d.doc_buckets = (1,)
    c.optim.main = base._phase(steps=1200, lr=2e-3, warmup_steps=20, decay="constant",
                               end_lr=2e-3, lm_weight=1.0, aux_weight=0.1)
    # held-out recall among 2,000 documents: what the stage costs the router (its memory has no
    # hard negatives, as data.hard_negatives is 0 here: not comparable with stage 2's figures)
    c.eval.every = 400
    c.train.checkpoint_every = 200
    return c
