"""Stage 4 of the bundled demo model's recipe: retrieval and answer steps together, two
documents per sample.

    msa-jax train --config=configs/train_demo_reader.py --workdir=runs/demo-reader \
        --init_from=runs/demo-answer/export

From stage 3's export (configs/train_demo_answer.py): every step of single-hop and two-hop
chains (`data.kinds=("retrieve", "answer")`), two documents per sample (a two-hop chain's
two; a single-hop question's own and one other), top-1 selection, the router projections
frozen, `L_LM` only, lr 2e-3 cosine to 2e-4, 1,600 steps of 16. It keeps the retrieval format
(which document to name, when to stop) alive while the answer step improves; the ids' digits
are not learned from pooled chunks here (teacher-forced: docs/training.md), which is why the
demo constrains each round's id to the documents the round routed (`ask.constrain_ids`).
"""

import os

from msa_jax.utils import load_python_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo_answer.py")).get_config()
    d = c.data
    d.kinds = ("retrieve", "answer")
    d.hops = (1, 2)
    d.docs_per_sample = 2
    d.length_buckets = (192, 288, 384)
    d.doc_buckets = (2,)
    c.optim.main = base._phase(steps=1600, lr=2e-3, warmup_steps=20, decay="cosine",
                               end_lr=2e-4, lm_weight=1.0, aux_weight=0.0)
    c.train.checkpoint_every = 200
    return c
