"""Stage 3 of the bundled demo model's recipe: the answer step alone.

    msa-jax train --config=configs/train_demo_answer.py --workdir=runs/demo-answer \
        --init_from=runs/demo/export

From stage 2's export (configs/train_demo.py): answer steps only (`data.kinds=("answer",)`:
the question, the retrieval round, the injected text of the question's document, then "The
answer to the question is: VALUE"), single-hop, one document per sample, top-1 selection, the
router projections frozen (`optim.freeze="router"`), `L_LM` only, lr 2e-3 constant, 1,000 steps
of 16. The LM loss sits at its chance level (~0.37: the value is one of 40 words) for ~600
steps, then falls (docs/training.md): copying a value out of injected text is learnable here,
after a plateau. The model forgets the retrieval format meanwhile; stage 4
(configs/train_demo_reader.py) trains both steps together.
"""

import os

from msa_jax.utils import load_python_file


def get_config():
    here = os.path.dirname(os.path.abspath(__file__))
    base = load_python_file(os.path.join(here, "train_tiny.py"))
    c = load_python_file(os.path.join(here, "train_demo.py")).get_config()
    c.model.top_k_docs = 1
    d = c.data
    d.kinds = ("answer",)
    d.hops = (1,)
    d.hard_negatives = 0
    d.docs_per_sample = 1
    d.num_queries = 16000
    d.length_buckets = (176, 224)
    d.doc_buckets = (1,)
    c.optim.freeze = "router"
    c.optim.main = base._phase(steps=1000, lr=2e-3, warmup_steps=20, decay="constant",
                               end_lr=2e-3, lm_weight=1.0, aux_weight=0.0)
    c.eval.every = 0  # the router does not move
    c.train.checkpoint_every = 250
    return c
