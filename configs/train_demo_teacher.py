"""Teacher-forced reading for the demo model: the router and the reader trained together, the
reader always given the right documents.

    msa-jax train --config=configs/train_demo_teacher.py --workdir=runs/demo-teacher \
        --init_from=models/msa-tiny-demo

The model and options of configs/train_demo.py (from the bundled model, which routes), with
`optim.read="target"`: in the router layers the LM path attends to the pooled chunks of the
documents the step's target names (a later hop's new document; the answer step's injected
ones) instead of the router's top-k, while the routing loss still trains the router on every
document of the batch (4 per sample, one hard negative per hop: 64 per question). Why: with
two documents in view the reader did not learn to choose between them (docs/training.md,
"Reading from random weights"), and with the router's choice the reader trains on the wrong
document whenever the router misses; with one document it learns the copy. At inference
the demo then reads the router's top-1 per router layer (`msa-jax demo --config.ask.top_k=1`).
All the steps of single- and two-hop chains (the `[id]` steps and the answer step),
`L_LM + L_aux`, lr 2e-3 cosine to 1e-4.
"""

import os

from msa_jax.utils import load_python_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo.py")).get_config()
    c.optim.read = "target"
    d = c.data
    d.kinds = ("retrieve", "answer")
    d.docs_per_sample = 4
    d.hard_negatives = 1
    d.num_queries = 6000  # per chain length
    d.length_buckets = (320, 384, 448)
    d.doc_buckets = (4,)
    c.optim.main = base._phase(steps=1500, lr=2e-3, warmup_steps=20, decay="cosine",
                               end_lr=1e-4, lm_weight=1.0, aux_weight=1.0)
    c.eval.every = 500
    c.train.checkpoint_every = 100
    return c
